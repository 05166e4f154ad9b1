//! Values every area of the store shares: paging and pool figures. Each area's own values
//! live beside its trait (`services.rs`, `alerting.rs`, …).

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    /// Open connections (idle + in use).
    pub size: u32,
    pub idle: u32,
    pub max: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    pub limit: u32,
    pub offset: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub entries: Vec<T>,
    /// Number of rows matching the filter, ignoring limit/offset.
    pub total_count: i64,
}
