//! Aggregation kernels (placeholder replaced by the kernel work).
