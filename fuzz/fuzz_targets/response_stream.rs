//! Arbitrary response bytes split at an arbitrary point: SSE usage scanning and the model-name
//! rewrite never panic and do not depend on where the network split the stream.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard::extproc::response::{ModelNameRewriter, SseUsageScanner, usage_from_json};

fuzz_target!(|input: (u16, &[u8])| {
    let (cut, data) = input;
    let cut = usize::from(cut) % (data.len() + 1);
    let _ = usage_from_json(data);
    let mut whole = SseUsageScanner::default();
    whole.feed(data);
    whole.finish();
    let mut split = SseUsageScanner::default();
    split.feed(&data[..cut]);
    split.feed(&data[cut..]);
    split.finish();
    assert_eq!(whole.usage(), split.usage());
    let mut a = ModelNameRewriter::new("target", "client").unwrap();
    let one = a.feed(data, true);
    let mut b = ModelNameRewriter::new("target", "client").unwrap();
    let mut two = b.feed(&data[..cut], false);
    two.extend(b.feed(&data[cut..], true));
    assert_eq!(one, two);
});
