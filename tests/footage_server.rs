//! The footage server as a camera's stand-in: a looping mount plays its file over and over in one stream
//! that never ends, with RTP timestamps that keep increasing, as a live camera's do.

mod support;

use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;

use streetwatch::ingest::FootageServer;

/// bikes.mp4 is 10 s long (fixtures/README.md).
const CLIP: Duration = Duration::from_secs(10);

#[test]
fn a_looping_mount_streams_past_the_end_of_its_file_with_increasing_timestamps() {
    let server =
        FootageServer::start_looping(&[("bikes".into(), support::footage("bikes.mp4"))], 0)
            .unwrap();
    // buffer-mode=none: buffer times come from the RTP timestamps alone, not from arrival times, so a
    // jump back at the file's end would show as one here.
    let (pipeline, sink) = support::play_to_appsink(&format!(
        "rtspsrc location={} protocols=tcp latency=0 buffer-mode=none ! rtph264depay ! h264parse \
         ! appsink name=sink sync=false",
        server.url("bikes")
    ));
    let want = CLIP + Duration::from_secs(6);
    let started = Instant::now();
    let (mut first, mut last): (Option<gst::ClockTime>, Option<gst::ClockTime>) = (None, None);
    let mut buffers = 0u64;
    // Real time: the server paces the file; a loaded machine may take longer, never less.
    while started.elapsed() < Duration::from_secs(120) {
        let Some(sample) = sink.try_pull_sample(gst::ClockTime::from_seconds(5)) else {
            assert!(
                !sink.is_eos(),
                "the stream ended after {:?} ({buffers} buffers, media {:?}–{:?})",
                started.elapsed(),
                first,
                last
            );
            continue;
        };
        let Some(pts) = sample.buffer().and_then(|b| b.pts()) else {
            continue;
        };
        buffers += 1;
        first.get_or_insert(pts);
        if let Some(prev) = last {
            let step = pts.nseconds() as i128 - prev.nseconds() as i128;
            // One frame at 25 fps is 40 ms; reordered pictures step back by a few frames at most.
            assert!(
                step.abs() < 1_000_000_000,
                "timestamps jumped by {step} ns at {pts} (after {buffers} buffers)"
            );
        }
        last = Some(last.map_or(pts, |l| l.max(pts)));
        if let (Some(f), Some(l)) = (first, last)
            && Duration::from_nanos((l - f).nseconds()) >= want
        {
            break;
        }
    }
    pipeline.set_state(gst::State::Null).unwrap();
    let span = Duration::from_nanos((last.unwrap() - first.unwrap()).nseconds());
    assert!(
        span >= want,
        "only {span:?} of media in {:?} ({buffers} buffers)",
        started.elapsed()
    );
    // Every picture of the passes came: 25 fps over the span, give or take a second's worth.
    let expected = span.as_secs_f64() * 25.0;
    assert!(
        (buffers as f64) > expected - 25.0 && (buffers as f64) < expected + 25.0,
        "{buffers} buffers over {span:?}"
    );
}
