//! Histogram samples are folded into buckets on a timer, whether or not
//! anyone renders `/metrics`: a process nobody scrapes keeps flat memory.
//!
//! A counting global allocator gives the bytes live on the heap, exactly;
//! a million samples recorded and never rendered hold about 8 MB until
//! the exporter's upkeep drains them. The test keeps recording a trickle,
//! as a live service does, and waits (up to a generous bound, several
//! upkeep intervals) for that memory to be given back.

use std::{
    alloc::{GlobalAlloc, Layout, System},
    sync::atomic::{AtomicIsize, Ordering},
    time::{Duration, Instant},
};

/// The system allocator, counting the bytes it holds for the program.
struct Counting;

static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is passed straight to the system allocator; the
// counter only observes sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE_BYTES.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const SAMPLES: usize = 1_000_000;

#[test]
fn histogram_samples_are_drained_without_a_scrape() {
    votemesh::metrics::install();
    let histogram = metrics::histogram!("votemesh_upkeep_test_seconds");
    histogram.record(0.001);
    let before = LIVE_BYTES.load(Ordering::Relaxed);
    for i in 0..SAMPLES {
        histogram.record((i % 100) as f64 / 1000.0);
    }
    let held = LIVE_BYTES.load(Ordering::Relaxed) - before;
    assert!(
        held > (SAMPLES * 4) as isize,
        "recording {SAMPLES} samples should hold their memory until upkeep; held {held} bytes"
    );

    // Nobody renders /metrics here; only the upkeep thread can drain them.
    // Samples keep arriving, as in a live service: the exporter's buckets
    // free drained blocks through epoch-based reclamation, which makes
    // progress as threads record.
    let give_up = Instant::now() + 6 * votemesh::metrics::UPKEEP_INTERVAL;
    loop {
        let still_held = LIVE_BYTES.load(Ordering::Relaxed) - before;
        if still_held < 1 << 20 {
            break;
        }
        assert!(
            Instant::now() < give_up,
            "{still_held} bytes of histogram samples still held after {:?} without a scrape",
            6 * votemesh::metrics::UPKEEP_INTERVAL
        );
        for _ in 0..200 {
            histogram.record(0.002);
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}
