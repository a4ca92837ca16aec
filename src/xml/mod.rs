//! XML on the wire: the incremental stream parser and the namespaces martlet speaks.

pub mod names;
pub mod ns;
pub mod stream_parser;
pub mod write;
