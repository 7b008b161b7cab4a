//! The PromQL parser (nom), AST and printer
