//! One module per subcommand.
pub mod taxonomy;
pub mod validate;
