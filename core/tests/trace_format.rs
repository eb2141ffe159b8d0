//! The `traceparent` text and the `trace_id` log field are written by hand (a hex table, not
//! `format!`, on the hot path): for any ids they are what `format!` writes, and a value read
//! back is the same context.

use plume::trace::TraceContext;
use proptest::prelude::*;

/// What the W3C format says, written with `format!`.
fn expected(trace: u128, span: u64, flags: u8) -> String {
    format!("00-{trace:032x}-{span:016x}-{flags:02x}")
}

proptest! {
    #[test]
    fn traceparent_round_trips_for_any_ids(trace in 1u128.., span in 1u64.., flags in any::<u8>()) {
        let text = expected(trace, span, flags);
        let ctx = TraceContext::parse(&text).expect("a valid traceparent");
        prop_assert_eq!(ctx.traceparent(), text);
        prop_assert_eq!(ctx.trace_id_field().to_string(), format!("{trace:032x}"));
        prop_assert_eq!(ctx.trace_id(), format!("{trace:032x}"));
        prop_assert_eq!(ctx.span_id(), format!("{span:016x}"));
    }
}

#[test]
fn small_and_large_ids_keep_their_leading_zeros_and_all_digits() {
    for (trace, span, flags) in [
        (1u128, 1u64, 0u8),
        (u128::MAX, u64::MAX, 0xff),
        (
            0x0123_4567_89ab_cdef_fedc_ba98_7654_3210,
            0x00f0_67aa_0ba9_02b7,
            1,
        ),
    ] {
        let text = expected(trace, span, flags);
        let ctx = TraceContext::parse(&text).expect("a valid traceparent");
        assert_eq!(ctx.traceparent(), text);
        assert_eq!(ctx.traceparent().len(), 55);
        assert_eq!(ctx.trace_id_field().to_string(), format!("{trace:032x}"));
    }
    let root = TraceContext::new_root();
    assert_eq!(TraceContext::parse(&root.traceparent()), Some(root));
}
