//! Where messages enter and leave a graph: [`source`] readers and [`sink`] writers.

pub mod sink;
pub mod source;
