//! Target discovery: static, file-based and HTTP service discovery as Prometheus does it
