//! Certificate lookup per TLS handshake: the same lookup with 10 and with
//! 10,000 certificates, to show it does not grow with their number.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use sluice::tls::certificates::{Certificate, CertificateTable};

/// A table of `count` certificates, `host-N.example.com` each, plus a
/// wildcard one; they share one key pair, which the lookup never reads.
fn table(count: usize) -> CertificateTable {
    let generated =
        rcgen::generate_simple_self_signed(vec!["bench.example.com".to_string()]).unwrap();
    let template = Certificate::from_pem(
        generated.cert.pem().as_bytes(),
        generated.signing_key.serialize_pem().as_bytes(),
        Vec::new(),
        "the bench certificate",
    )
    .unwrap();
    let mut table = CertificateTable::default();
    for i in 0..count {
        let mut certificate = template.clone();
        certificate.info.names = vec![format!("host-{i}.example.com")];
        table.insert(certificate);
    }
    let mut wildcard = template;
    wildcard.info.names = vec!["*.tenants.example.com".to_string()];
    table.insert(wildcard);
    table
}

fn lookup(c: &mut Criterion) {
    let mut group = c.benchmark_group("tls_certificate_lookup");
    for count in [10, 10_000] {
        let table = table(count);
        let exact = format!("host-{}.example.com", count / 2);
        group.bench_function(format!("exact_name_{count}_certificates"), |b| {
            b.iter(|| black_box(table.lookup(Some(black_box(&exact)))))
        });
        group.bench_function(format!("wildcard_name_{count}_certificates"), |b| {
            b.iter(|| black_box(table.lookup(Some(black_box("acme.tenants.example.com")))))
        });
    }
    group.finish();
}

criterion_group!(benches, lookup);
criterion_main!(benches);
