fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    tonic_prost_build::configure()
        .bytes(".logferry.v1")
        .compile_protos(
            &[
                "proto/logferry/v1/logs.proto",
                "proto/logferry/v1/query.proto",
            ],
            &["proto"],
        )?;
    Ok(())
}
