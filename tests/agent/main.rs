//! The agent's scan, end to end on the host: a real moto S3 server, an IMS double
//! that follows the IMS schema, the mount as a directory, and the fake configfs
//! (which the contract suite holds to the kernel's behaviour).

mod deadlines;
mod failures;
mod fleet;
mod scans;
mod support;
