//! The command line: any argument list gets an answer (parsed, or an error naming the flag),
//! never a panic. Arguments are the input split at NUL bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut args = vec!["switchyard".to_string()];
    args.extend(text.split('\0').take(64).map(str::to_string));
    let _ = switchyard::cli::parse(args);
});
