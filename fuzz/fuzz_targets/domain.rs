//! Site-domain normalisation: `domain::normalize` (what ingest does to the `site` a body names),
//! `legacy::legacy_domain` (what the migration does to a legacy row's site URL or host) and the
//! registry's own check (`SiteDomain::parse`). Invariants: what normalises is a valid
//! `SiteDomain`, holds no key separator, and is a fixed point (normalising it again, or parsing
//! it, gives the same value); a domain that is already valid and also normalises is unchanged; a
//! legacy domain is a normal domain, and a fixed point of `legacy_domain` too.
#![no_main]

use libfuzzer_sys::fuzz_target;

use formbridge_shared::domain::normalize;
use formbridge_shared::legacy::legacy_domain;
use formbridge_shared::SiteDomain;

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else { return };
    let parsed = SiteDomain::parse(raw);
    if let Ok(l) = legacy_domain(raw) {
        assert_eq!(normalize(l.as_str()).as_ref(), Ok(&l), "legacy {raw:?} gave a domain that is not normal");
        assert_eq!(legacy_domain(l.as_str()).as_ref(), Ok(&l), "legacy_domain is not idempotent on {raw:?}");
    }
    let Ok(d) = normalize(raw) else { return };
    assert!(!d.as_str().contains('#'), "{d} holds a key separator");
    assert!(d.as_str().len() <= 253);
    assert_eq!(SiteDomain::parse(d.as_str()).as_ref(), Ok(&d), "{raw:?} normalised to an invalid domain");
    assert_eq!(normalize(d.as_str()).as_ref(), Ok(&d), "normalising {raw:?} is not idempotent");
    assert_eq!(d.as_str().parse::<SiteDomain>().as_ref(), Ok(&d));
    if let Ok(p) = parsed {
        assert_eq!(p, d, "{raw:?} is a valid domain that normalises to another");
    }
});
