//! Moving one sequence's KV cells between two contexts of the same model whose caches have
//! different stream counts (the batched context has one stream per slot, the single-sequence
//! context one).
//!
//! llama.cpp serialises a sequence as `magic: u32, seq_id: i32, n_stream: u32`, then per stream
//! `cell_count: u32` followed, when non-zero, by that stream's cells; it refuses a state whose
//! `n_stream` differs from its own. A sequence lives in one stream, so the state of another
//! context is the same bytes with the empty streams' zero counts laid out around it:
//! [`reframe`] does that, checking the layout first, and llama.cpp validates the cells (layer
//! count, row sizes, positions) when it reads them back.

// The safe `SeqState` API keeps its bytes opaque, so re-framing them needs the raw calls.
#![allow(unsafe_code)]

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::context::session::LlamaStateSeqFlags;

const HEADER: usize = 8;

/// Copies sequence `from_id` of `from` (whose cache has `from_streams` streams; the sequence is
/// in stream `from_id` when there are several, else 0) into sequence `to_id` of `to`, then frees
/// it in `from`.
pub(crate) fn move_seq(
    from: &mut LlamaContext<'_>,
    (from_id, from_streams): (i32, u32),
    to: &mut LlamaContext<'_>,
    (to_id, to_streams): (i32, u32),
) -> Result<(), String> {
    let state = take_seq(from, from_id)?;
    put_seq(
        to,
        &state,
        (stream(from_id, from_streams), from_streams),
        (to_id, to_streams),
    )
}

/// The stream a sequence lives in: its id when the cache has several, else 0.
fn stream(id: i32, n_streams: u32) -> u32 {
    if n_streams > 1 { id as u32 } else { 0 }
}

/// Reads the KV cells of sequence `id` of `from` (a cache of `n_streams` streams) and frees them
/// there. The bytes are llama.cpp's sequence state, for [`put_seq`].
pub(crate) fn take_seq(from: &mut LlamaContext<'_>, id: i32) -> Result<Vec<u8>, String> {
    let flags = LlamaStateSeqFlags::empty();
    let size = from.state_seq_get_size_ext(id, flags);
    let mut state = vec![0u8; size];
    // SAFETY: `state` holds exactly the size llama.cpp reported for this sequence and flags.
    let written = unsafe { from.state_seq_get_data_ext(state.as_mut_ptr(), id, flags) };
    if written != size {
        return Err(format!(
            "reading a sequence's KV cells gave {written} of {size} bytes"
        ));
    }
    let _ = from.clear_kv_cache_seq(Some(id as u32), None, None);
    Ok(state)
}

/// Writes a state read by [`take_seq`] from stream `from.0` of a cache of `from.1` streams into
/// sequence `to_id` of `to` (a cache of `to_streams` streams).
pub(crate) fn put_seq(
    to: &mut LlamaContext<'_>,
    state: &[u8],
    (from_stream, from_streams): (u32, u32),
    (to_id, to_streams): (i32, u32),
) -> Result<(), String> {
    let flags = LlamaStateSeqFlags::empty();
    let framed = reframe(
        state,
        (from_streams, from_stream),
        (to_streams, stream(to_id, to_streams)),
    )?;
    // SAFETY: llama.cpp reads the buffer through a bounds-checked reader and validates the
    // cells against its own cache before writing them.
    if !unsafe { to.state_seq_set_data_ext(&framed, to_id, flags) } {
        return Err("llama.cpp refused a sequence's KV cells moved from another context".into());
    }
    Ok(())
}

/// Re-frames a sequence state read from a cache with `from.0` streams (the sequence in stream
/// `from.1`) for a cache with `to.0` streams (into stream `to.1`).
pub(crate) fn reframe(state: &[u8], from: (u32, u32), to: (u32, u32)) -> Result<Vec<u8>, String> {
    let u32_at = |at: usize| -> Option<u32> {
        state
            .get(at..at + 4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
    };
    let (n_from, s_from) = (from.0 as usize, from.1 as usize);
    let (n_to, s_to) = (to.0 as usize, to.1 as usize);
    if s_from >= n_from || s_to >= n_to {
        return Err(format!(
            "stream {s_from} of {n_from} or {s_to} of {n_to} does not exist"
        ));
    }
    let n_stream = u32_at(HEADER).ok_or("sequence state shorter than its header")?;
    if n_stream as usize != n_from {
        return Err(format!(
            "sequence state has {n_stream} streams, its context {n_from}"
        ));
    }
    let start = HEADER + 4 + 4 * s_from;
    let tail = 4 * (n_from - 1 - s_from);
    if state.len() < start + 4 + tail {
        return Err("sequence state shorter than its stream counts".into());
    }
    let end = state.len() - tail;
    let empty_before = (0..s_from).all(|s| u32_at(HEADER + 4 + 4 * s) == Some(0));
    let empty_after = state[end..].iter().all(|&b| b == 0);
    if !empty_before || !empty_after {
        return Err("sequence state holds cells in more than one stream".into());
    }
    let mut out = Vec::with_capacity(HEADER + 4 * (n_to + 1) + (end - start));
    out.extend_from_slice(&state[..HEADER]);
    out.extend_from_slice(&(n_to as u32).to_le_bytes());
    out.extend(std::iter::repeat_n(0u8, 4 * s_to));
    out.extend_from_slice(&state[start..end]);
    out.extend(std::iter::repeat_n(0u8, 4 * (n_to - 1 - s_to)));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::reframe;

    fn state(n_stream: u32, counts: &[(u32, &[u8])]) -> Vec<u8> {
        let mut v = vec![0xAB, 0xCD, 0xEF, 0x01, 3, 0, 0, 0];
        v.extend(n_stream.to_le_bytes());
        for (count, cells) in counts {
            v.extend(count.to_le_bytes());
            v.extend(*cells);
        }
        v
    }

    #[test]
    fn moves_a_stream_between_layouts() {
        let cells: &[u8] = &[9, 8, 7, 0, 0];
        let eight = state(
            8,
            &[
                (0, &[]),
                (0, &[]),
                (0, &[]),
                (2, cells),
                (0, &[]),
                (0, &[]),
                (0, &[]),
                (0, &[]),
            ],
        );
        let one = reframe(&eight, (8, 3), (1, 0)).unwrap();
        assert_eq!(one, state(1, &[(2, cells)]));
        let back = reframe(&one, (1, 0), (8, 3)).unwrap();
        assert_eq!(back, eight);
        let elsewhere = reframe(&one, (1, 0), (8, 0)).unwrap();
        assert_eq!(
            elsewhere,
            state(
                8,
                &[
                    (2, cells),
                    (0, &[]),
                    (0, &[]),
                    (0, &[]),
                    (0, &[]),
                    (0, &[]),
                    (0, &[]),
                    (0, &[])
                ]
            )
        );
    }

    #[test]
    fn refuses_states_it_does_not_understand() {
        let cells: &[u8] = &[1, 2, 3, 4];
        let two = state(2, &[(1, cells), (1, cells)]);
        assert!(
            reframe(&two, (2, 0), (1, 0))
                .unwrap_err()
                .contains("more than one stream")
        );
        assert!(
            reframe(&two, (4, 0), (1, 0))
                .unwrap_err()
                .contains("2 streams")
        );
        assert!(reframe(&two[..6], (2, 0), (1, 0)).is_err());
        assert!(reframe(&two, (2, 2), (1, 0)).is_err());
    }
}
