//! A batch as an agent (or anyone reaching the ingest port) sends it: the
//! protobuf `ExportRequest`, its chunks (lines or pushed records), the JSON
//! mapping onto columns, time and severity parsing. Any input is either
//! refused with an error or decoded into rows; nothing panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use logferry_collector::decode::decode_batch;
use logferry_proto::ExportRequest;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = ExportRequest::decode(data) {
        if let Ok(decoded) = decode_batch(&req, "t", 100_000) {
            for row in &decoded.rows {
                assert!(row.seq >= req.first_seq && row.seq <= req.last_seq);
            }
        }
    }
});
