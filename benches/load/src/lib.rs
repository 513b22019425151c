//! Support for the load benchmark (`benches/load/run.py`): a fast fake Google upstream and a
//! bare pingora passthrough, the two reference points Tollgate is measured against. Not part of
//! the product; nothing here is used by the gateway.
