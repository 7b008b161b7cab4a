//! The PromQL parser (nom), AST and printer.
//!
//! `parse` turns a query into a typed [`Expr`] (with Prometheus's type
//! checks), and `Display` renders an [`Expr`] back to canonical PromQL as
//! Prometheus's `format_query` does.

pub mod ast;
pub mod error;
pub mod functions;
pub mod lexer;
pub mod parser;
pub mod printer;

pub use ast::*;
pub use error::ParseError;
pub use functions::{lookup as lookup_function, Function, FUNCTIONS};
pub use parser::parse;
pub use printer::{format_float, quote};
