//! Search parameters as the HTTP and gRPC APIs receive them, one per line
//! of the input (q, from, to, last, level, service, text, order, cursor),
//! planned into SQL for both dialects. Bad input gets an error, never a
//! panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use logferry_collector::query::sql::Dialect;
use logferry_collector::query::SearchParams;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut f = text
        .split('\n')
        .map(|s| (!s.is_empty()).then(|| s.to_string()));
    let mut next = || f.next().flatten();
    let params = SearchParams {
        q: next(),
        from: next(),
        to: next(),
        last: next(),
        level: next(),
        service: next(),
        text: next(),
        order: next(),
        cursor: next(),
        ..SearchParams::default()
    };
    for (body_ngrams, attribute_map) in [(false, false), (true, true)] {
        let d = Dialect {
            body_ngrams,
            attribute_map,
        };
        let _ = params.plan(1_800_000_000_000_000_000, d);
    }
});
