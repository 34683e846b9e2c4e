pub use audit_runtime::*;
