//! One module per subcommand.
pub mod taxonomy;
pub mod validate;
pub mod report;
pub mod compare;
pub mod model;
pub mod serve;
pub mod bench;
pub mod sandbox;
pub mod pipeline;
