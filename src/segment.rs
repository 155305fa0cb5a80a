//! One named shared-memory object. STUB.
#![allow(missing_docs, unused)]
