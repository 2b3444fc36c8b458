//! Python buffers (numpy arrays, torch CPU tensors through `Tensor.numpy()`, memoryviews,
//! `array.array('f')`) seen as `&mut [f32]` without a copy, through the buffer protocol.
#![allow(unsafe_code)]

use crate::errors::{raise, Kind};
use pyo3::buffer::PyBuffer;
use pyo3::prelude::*;

/// Buffers checked to be writable, C-contiguous float32 and pairwise disjoint, held (so
/// their exporters keep the memory where it is) until dropped.
pub struct Buffers {
    held: Vec<PyBuffer<f32>>,
}

impl Buffers {
    pub fn get(objs: &[Bound<'_, PyAny>]) -> PyResult<Self> {
        let py = match objs.first() {
            Some(o) => o.py(),
            None => return Ok(Self { held: Vec::new() }),
        };
        let mut held = Vec::with_capacity(objs.len());
        for (i, obj) in objs.iter().enumerate() {
            let what = || describe(obj, i, objs.len());
            let buf = PyBuffer::<f32>::get(obj).map_err(|e| {
                raise(
                    py,
                    Kind::Buffer,
                    format!(
                        "{} is not a float32 buffer ({e}): NetStorm all-reduces float32; \
                         convert with .astype(numpy.float32) or tensor.float()",
                        what()
                    ),
                )
            })?;
            if buf.readonly() {
                return Err(raise(
                    py,
                    Kind::Buffer,
                    format!("{} is read-only: allreduce works in place", what()),
                ));
            }
            if !buf.is_c_contiguous() {
                return Err(raise(
                    py,
                    Kind::Buffer,
                    format!(
                        "{} is not C-contiguous: pass numpy.ascontiguousarray(x) or \
                         tensor.contiguous() (and copy the result back)",
                        what()
                    ),
                ));
            }
            held.push(buf);
        }
        // Two views of the same memory would be two `&mut` to it, and a round would mix them.
        let mut spans: Vec<(usize, usize, usize)> = held
            .iter()
            .enumerate()
            .filter(|(_, b)| b.item_count() > 0)
            .map(|(i, b)| {
                (
                    b.buf_ptr() as usize,
                    b.buf_ptr() as usize + b.len_bytes(),
                    i,
                )
            })
            .collect();
        spans.sort_unstable();
        for w in spans.windows(2) {
            if w[1].0 < w[0].1 {
                return Err(raise(
                    py,
                    Kind::Buffer,
                    format!(
                        "buffers {} and {} overlap in memory: pass each tensor once",
                        w[0].2.min(w[1].2),
                        w[0].2.max(w[1].2)
                    ),
                ));
            }
        }
        Ok(Self { held })
    }

    pub fn lens(&self) -> Vec<usize> {
        self.held.iter().map(|b| b.item_count()).collect()
    }

    /// The buffers as slices. The caller (and Python code in other threads, while the GIL is
    /// released) must not touch the objects until the slices are gone: the same contract as
    /// numpy's and torch's own GIL-free kernels.
    pub fn slices(&mut self) -> Vec<&mut [f32]> {
        self.held
            .iter_mut()
            .map(|b| {
                let n = b.item_count();
                if n == 0 {
                    return &mut [][..];
                }
                // SAFETY: `PyBuffer::get` checked item size 4, a float32 format and f32
                // alignment; we checked it is writable and C-contiguous, so `n` f32 lie back
                // to back from `buf_ptr`; the held `Py_buffer` keeps the exporter's memory
                // alive and in place for `'self`; the spans were checked pairwise disjoint
                // and `&mut self` hands each out once, so no two slices alias.
                unsafe { std::slice::from_raw_parts_mut(b.buf_ptr() as *mut f32, n) }
            })
            .collect()
    }
}

fn describe(obj: &Bound<'_, PyAny>, i: usize, n: usize) -> String {
    let ty = obj
        .get_type()
        .name()
        .map(|s| s.to_string())
        .unwrap_or_else(|_| "object".into());
    if n == 1 {
        format!("the buffer (a {ty})")
    } else {
        format!("buffer {i} (a {ty})")
    }
}
