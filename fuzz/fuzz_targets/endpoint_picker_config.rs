//! Arbitrary EndpointPickerConfig documents: loading never panics, and an accepted config builds
//! a scheduler and renders to YAML that loads again.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(cfg) = switchyard::config::load_str(&String::from_utf8_lossy(data)) {
        let _ = switchyard::runtime::build_scheduler(&cfg, None);
        switchyard::config::load_str(&cfg.to_yaml()).expect("rendered config loads");
    }
});
