//! Query results as the API returns them (scalar, vector, matrix, string),
//! the errors a query can end with, and Prometheus's error types.

use panoptes_model::Labels;

/// One element of an instant vector.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub labels: Labels,
    /// Evaluation timestamp, ms.
    pub t: i64,
    pub v: f64,
}

/// One series of a range vector (matrix).
#[derive(Clone, Debug, PartialEq)]
pub struct RangeSeries {
    pub labels: Labels,
    /// `(timestamp_ms, value)` in ascending time order.
    pub points: Vec<(i64, f64)>,
}

/// The value of a query.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// `(timestamp_ms, value)`.
    Scalar(i64, f64),
    Vector(Vec<Sample>),
    Matrix(Vec<RangeSeries>),
    /// `(timestamp_ms, value)`.
    String(i64, String),
}

impl Value {
    /// The API's `resultType` name.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Scalar(..) => "scalar",
            Value::Vector(_) => "vector",
            Value::Matrix(_) => "matrix",
            Value::String(..) => "string",
        }
    }
}

/// A query's value and its annotations.
#[derive(Clone, Debug, PartialEq)]
pub struct QueryResult {
    pub value: Value,
    /// `PromQL warning: …` annotations.
    pub warnings: Vec<String>,
    /// `PromQL info: …` annotations.
    pub infos: Vec<String>,
}

/// Why a query failed; `error_type()` is Prometheus's `errorType`.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The query is malformed for this kind of request.
    #[error("{0}")]
    BadData(String),
    /// Evaluation failed (duplicate label sets, too many samples, …).
    #[error("{0}")]
    Execution(String),
    #[error("{0}")]
    Timeout(String),
    #[error("{0}")]
    Canceled(String),
    #[error("{0}")]
    Storage(#[from] panoptes_model::StorageError),
}

impl QueryError {
    /// Prometheus's API `errorType` for this error.
    pub fn error_type(&self) -> &'static str {
        match self {
            QueryError::BadData(_) => "bad_data",
            QueryError::Execution(_) => "execution",
            QueryError::Timeout(_) => "timeout",
            QueryError::Canceled(_) => "canceled",
            QueryError::Storage(panoptes_model::StorageError::Canceled) => "canceled",
            QueryError::Storage(_) => "internal",
        }
    }
}
