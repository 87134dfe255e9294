//! Generates the echo service's server and client from a description in
//! Rust: no `.proto` file, so no `protoc` on the build machine.

fn main() {
    let method = |name: &str, route: &str, client_streaming: bool, server_streaming: bool| {
        let mut method = tonic_build::manual::Method::builder()
            .name(name)
            .route_name(route)
            .input_type("crate::proto::EchoRequest")
            .output_type("crate::proto::EchoReply")
            .codec_path("tonic_prost::ProstCodec");
        if client_streaming {
            method = method.client_streaming();
        }
        if server_streaming {
            method = method.server_streaming();
        }
        method.build()
    };
    let echo = tonic_build::manual::Service::builder()
        .name("Echo")
        .package("sluice.test")
        .method(method("unary", "Unary", false, false))
        .method(method("server_stream", "ServerStream", false, true))
        .method(method("client_stream", "ClientStream", true, false))
        .method(method("bidi", "Bidi", true, true))
        .build();
    tonic_build::manual::Builder::new().compile(&[echo]);
}
