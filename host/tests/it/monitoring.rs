//! The monitoring examples in `examples/monitoring/`: promtool checks the
//! alert rules and runs their unit tests, the dashboard's queries are valid
//! PromQL, and every metric the rules and the dashboard query is exported by
//! a real Sluice serving routes, breakers, health checks, plugins and
//! certificates.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::common::{closed_address, free_port, get, render, scratch_dir, upstreams, Proxy};
use crate::plugins::plugin_dir;

/// `examples/monitoring/` in this checkout.
fn monitoring_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join("examples/monitoring")
}

/// Runs `promtool` with `args` in `dir`; fails the test, saying how to get
/// it, when promtool is not installed.
fn promtool(dir: &Path, args: &[&str]) -> Output {
    Command::new("promtool")
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run promtool ({e}): these tests check examples/monitoring with it. \
                 Install it with `apt-get install prometheus` (scripts/test.sh does)."
            )
        })
}

/// Asserts that `output` is a success, showing what promtool said if not.
fn assert_success(output: &Output, what: &str) {
    assert!(
        output.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn alert_rules() -> String {
    std::fs::read_to_string(monitoring_dir().join("sluice-alerts.yml")).unwrap()
}

fn dashboard() -> serde_json::Value {
    let text = std::fs::read_to_string(monitoring_dir().join("sluice-dashboard.json")).unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("the dashboard is not JSON: {e}"))
}

/// The `expr` of every rule in a rules file, each written either on its
/// line or as a `|` block indented below it.
fn rule_expressions(yaml: &str) -> Vec<String> {
    let indent = |line: &str| line.len() - line.trim_start().len();
    let lines: Vec<&str> = yaml.lines().collect();
    let mut expressions = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        i += 1;
        let Some(rest) = line.trim_start().strip_prefix("expr:") else {
            continue;
        };
        let rest = rest.trim();
        if rest != "|" {
            expressions.push(rest.to_string());
            continue;
        }
        let mut block = String::new();
        while i < lines.len() && (lines[i].trim().is_empty() || indent(lines[i]) > indent(line)) {
            block.push_str(lines[i].trim());
            block.push('\n');
            i += 1;
        }
        expressions.push(block);
    }
    expressions
}

/// Every PromQL query of a Grafana dashboard: the panels' `expr` and the
/// templating variables' queries (for `label_values(selector, label)`, the
/// selector).
fn dashboard_queries(dashboard: &serde_json::Value) -> Vec<String> {
    fn exprs(value: &serde_json::Value, found: &mut Vec<String>) {
        match value {
            serde_json::Value::Object(map) => {
                for (key, value) in map {
                    match value {
                        serde_json::Value::String(expr) if key == "expr" => {
                            found.push(expr.clone())
                        }
                        _ => exprs(value, found),
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| exprs(v, found)),
            _ => {}
        }
    }
    let mut found = Vec::new();
    exprs(&dashboard["panels"], &mut found);
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        if variable["type"] != "query" {
            continue;
        }
        let query = variable["query"]["query"]
            .as_str()
            .or_else(|| variable["query"].as_str())
            .unwrap();
        let selector = query
            .strip_prefix("label_values(")
            .and_then(|args| args.strip_suffix(')'))
            .and_then(|args| args.rsplit_once(','))
            .map_or(query, |(selector, _label)| selector);
        found.push(selector.to_string());
    }
    found
}

/// The index just past the `close` that ends the group opened at `open`,
/// skipping quoted strings.
fn skip_group(chars: &[char], open: usize, close: char) -> usize {
    let mut i = open + 1;
    while i < chars.len() && chars[i] != close {
        i = if matches!(chars[i], '"' | '\'' | '`') {
            skip_group(chars, i, chars[i])
        } else {
            i + 1
        };
    }
    i + 1
}

/// The metric names a PromQL expression selects: its identifiers that are
/// not functions, aggregations, keywords, label names, durations, numbers
/// or Grafana variables.
fn metric_names(expr: &str) -> BTreeSet<String> {
    const KEYWORDS: &[&str] = &[
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "group_left",
        "group_right",
        "inf",
        "nan",
        // Aggregations, which may be followed by `by (...)` before their
        // parenthesis.
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
        "limitk",
        "limit_ratio",
    ];
    const LABEL_LISTS: &[&str] = &[
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    let word_char = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            quote @ ('"' | '\'' | '`') => i = skip_group(&chars, i, quote),
            '{' => i = skip_group(&chars, i, '}'),
            '[' => i = skip_group(&chars, i, ']'),
            '$' if chars.get(i + 1) == Some(&'{') => i = skip_group(&chars, i + 1, '}'),
            '$' => {
                i += 1;
                while i < chars.len() && word_char(chars[i]) {
                    i += 1;
                }
            }
            c if c.is_ascii_digit() || c == '.' => {
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                    i += 1;
                }
            }
            c if word_char(c) => {
                let start = i;
                while i < chars.len() && word_char(chars[i]) {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let mut next = i;
                while next < chars.len() && chars[next].is_whitespace() {
                    next += 1;
                }
                let called = chars.get(next) == Some(&'(');
                if called && LABEL_LISTS.contains(&word.as_str()) {
                    i = skip_group(&chars, next, ')');
                } else if !called && !KEYWORDS.contains(&word.to_lowercase().as_str()) {
                    names.insert(word);
                }
            }
            _ => i += 1,
        }
    }
    names
}

/// The names of the series in a Prometheus text exposition.
fn exported_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .map(|line| line.split(['{', ' ']).next().unwrap().to_string())
        .collect()
}

/// The value of the series `series` (name and labels as rendered).
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {series} in:\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn metric_names_skip_functions_labels_keywords_and_variables() {
    let names = metric_names(
        r#"histogram_quantile(0.99, sum without (route) (rate(a_bucket{le!="+Inf",x=~"$job"}[$__rate_interval]))) > 0.2
             and on (job, instance) b_total offset 1h or vector(0) * 500e6 unless c:recorded
             or max by (a) (d) - count(e)"#,
    );
    assert_eq!(
        names,
        ["a_bucket", "b_total", "c:recorded", "d", "e"]
            .map(String::from)
            .into()
    );
}

#[test]
fn rule_expressions_read_lines_and_blocks() {
    let yaml = "rules:\n  - alert: A\n    expr: up == 0\n    for: 5m\n  - alert: B\n    expr: |\n      sum(x)\n        > 1\n    labels: {}\n";
    assert_eq!(rule_expressions(yaml), ["up == 0", "sum(x)\n> 1\n"]);
}

#[test]
fn alert_rules_pass_promtool_check() {
    let output = promtool(&monitoring_dir(), &["check", "rules", "sluice-alerts.yml"]);
    assert_success(&output, "promtool check rules sluice-alerts.yml");
}

#[test]
fn alert_rules_fire_past_their_thresholds_and_stay_quiet_short_of_them() {
    let output = promtool(
        &monitoring_dir(),
        &["test", "rules", "sluice-alerts.test.yml"],
    );
    assert_success(&output, "promtool test rules sluice-alerts.test.yml");
    // Every alert has a test that expects it to fire.
    let tests = std::fs::read_to_string(monitoring_dir().join("sluice-alerts.test.yml")).unwrap();
    for alert in alert_rules()
        .lines()
        .filter_map(|line| line.trim().strip_prefix("- alert: "))
    {
        let expects_firing = tests
            .split("alertname: ")
            .skip(1)
            .any(|test| test.starts_with(alert) && test.contains("exp_labels"));
        assert!(expects_firing, "no test fires {alert}");
    }
}

#[test]
fn dashboard_queries_are_valid_promql() {
    let dashboard = dashboard();
    assert!(
        dashboard["templating"]["list"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["type"] == "datasource" && v["query"] == "prometheus"),
        "the dashboard needs a Prometheus data source variable"
    );
    let queries = dashboard_queries(&dashboard);
    assert!(queries.len() > 20, "{queries:?}");
    // promtool checks PromQL in rule files: one recording rule per query,
    // Grafana's variables replaced by what Grafana would put there.
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (n, query) in queries.iter().enumerate() {
        let query = query
            .replace("$__rate_interval", "5m")
            .replace("$job", ".*")
            .replace("$instance", ".*");
        let quoted = serde_json::to_string(&query).unwrap();
        rules.push_str(&format!(
            "      - record: dashboard_query_{n}\n        expr: {quoted}\n"
        ));
    }
    let dir = scratch_dir();
    std::fs::write(dir.join("dashboard-rules.yml"), rules).unwrap();
    let output = promtool(&dir, &["check", "rules", "dashboard-rules.yml"]);
    assert_success(&output, "promtool check rules on the dashboard's queries");
}

/// A self-signed certificate for `name` valid for years, its chain and key
/// written to `cert` and `key`.
fn self_signed(name: &str, cert: &Path, key: &Path) {
    let generated = rcgen::generate_simple_self_signed(vec![name.to_string()]).unwrap();
    std::fs::create_dir_all(cert.parent().unwrap()).unwrap();
    std::fs::write(cert, generated.cert.pem()).unwrap();
    std::fs::write(key, generated.signing_key.serialize_pem()).unwrap();
}

/// A config with a placement whose only endpoint is down (its breaker opens
/// at the first failure and it fails over), a health-checked placement, a
/// route through two plugins of which one traps, a route with a certificate
/// file, and two ACME routes: one whose certificate is already stored, one
/// ordered from a CA that is not there.
fn monitored_config(
    upstream: SocketAddr,
    tls: SocketAddr,
    plugins: &Path,
    certificate: (&Path, &Path),
) -> String {
    format!(
        r#"[[listeners]]
address = "{tls}"
tls = true

[plugins]
directory = "{plugins}"
deadline = "250ms"

[placements.stable]
endpoints = [{{ address = "{upstream}" }}]
health = {{ kind = "tcp", interval = "100ms" }}

[placements.flaky]
endpoints = [{{ address = "{down}" }}]
fallback = "stable"
breaker = {{ consecutive_failures = 1, open_for = "1m" }}

[[routes]]
name = "flaky"
path_prefix = "/flaky"
placement = "flaky"

[[routes]]
name = "plugins"
path_prefix = "/plugins"
placement = "stable"
[[routes.plugins]]
name = "friendly"
config = {{ mode = "ok" }}
[[routes.plugins]]
name = "trapper"
config = {{ mode = "trap" }}

[[routes]]
name = "site"
hosts = ["site.example.test"]
placement = "stable"
tls = {{ cert = "{cert}", key = "{key}" }}

[[routes]]
name = "stored"
hosts = ["stored.example.test"]
placement = "stable"
tls = "acme"

[[routes]]
name = "ordered"
hosts = ["ordered.example.test"]
placement = "stable"
tls = "acme"

[[routes]]
name = "web"
placement = "stable"

[acme]
directory = "https://{ca}/dir"
"#,
        plugins = plugins.display(),
        down = closed_address(),
        cert = certificate.0.display(),
        key = certificate.1.display(),
        ca = closed_address(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn every_metric_the_alerts_and_the_dashboard_query_is_exported() {
    let up = upstreams(&["stable"]).await;
    let plugins = plugin_dir(&[
        ("friendly", "sluice-test-hostile"),
        ("trapper", "sluice-test-hostile"),
    ]);
    let dir = scratch_dir();
    let (cert, key) = (dir.join("site.pem"), dir.join("site.key"));
    self_signed("site.example.test", &cert, &key);
    // A certificate stored as ACME stores them: loaded at start, not due.
    let state_dir = dir.join("state");
    let stored = state_dir.join("certificates/stored.example.test");
    self_signed(
        "stored.example.test",
        &stored.join("fullchain.pem"),
        &stored.join("key.pem"),
    );
    let tls = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let (address, admin) = (
        SocketAddr::from(([127, 0, 0, 1], free_port())),
        SocketAddr::from(([127, 0, 0, 1], free_port())),
    );
    let config_path = dir.join("sluice.toml");
    let body = monitored_config(up[0].address, tls, &plugins, (&cert, &key));
    std::fs::write(&config_path, render(address, admin, &body)).unwrap();
    let proxy = Proxy::spawn(address, admin, config_path, state_dir, &[]);

    for _ in 0..5 {
        assert_eq!(get(&proxy, "app.test", "/", &[]).await.status, 200);
    }
    // The first request fails to connect and opens the breaker; the next
    // ones fail over to `stable`.
    assert_eq!(get(&proxy, "app.test", "/flaky", &[]).await.status, 502);
    let failed_over = get(&proxy, "app.test", "/flaky", &[]).await;
    assert_eq!(failed_over.status, 200, "{}", failed_over.body);
    assert_eq!(failed_over.header("x-failover-reason"), "circuit_open");
    let plugged = get(&proxy, "app.test", "/plugins", &[]).await;
    assert_eq!(plugged.status, 200, "{}", plugged.body);
    assert_eq!(plugged.echo()["headers"]["x-hostile"], "ok");

    let metrics = proxy.metrics().await;
    let exported = exported_names(&metrics);
    let mut queried = BTreeSet::new();
    let alerts = rule_expressions(&alert_rules());
    assert_eq!(
        alerts.len(),
        alert_rules().matches("- alert: ").count(),
        "one expression per alert: {alerts:?}"
    );
    for expr in alerts.iter().chain(&dashboard_queries(&dashboard())) {
        let names = metric_names(expr);
        assert!(!names.is_empty(), "no metric in {expr}");
        queried.extend(names);
    }
    let missing: Vec<_> = queried.difference(&exported).collect();
    assert!(
        missing.is_empty(),
        "queried but not exported: {missing:?}\n/metrics:\n{metrics}"
    );

    // The values the alerts read are the live ones.
    let down = |name: &str| {
        metrics
            .lines()
            .find(|line| line.starts_with(name) && line.contains("placement=\"flaky\""))
            .unwrap_or_else(|| panic!("no {name} for flaky in:\n{metrics}"))
            .rsplit(' ')
            .next()
            .unwrap()
            .parse::<f64>()
            .unwrap()
    };
    assert_eq!(down("sluice_breaker_state{"), 1.0);
    assert!(down("sluice_breaker_open_seconds{") > 0.0);
    assert!(sample(&metrics, "process_resident_memory_bytes") > 1e6);
    assert!(sample(&metrics, "process_cpu_seconds_total") > 0.0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let file_expiry = format!(
        "sluice_certificate_expiry_timestamp_seconds{{file=\"{}\"}}",
        cert.display()
    );
    assert!(sample(&metrics, &file_expiry) > now + 14.0 * 86_400.0);
    let acme_expiry =
        "sluice_acme_certificate_expiry_timestamp_seconds{name=\"stored.example.test\"}";
    assert!(sample(&metrics, acme_expiry) > now + 14.0 * 86_400.0);
    assert_eq!(
        sample(&metrics, "sluice_acme_attempts_total{result=\"success\"}"),
        0.0
    );
}
