//! Tools of `bench/run.sh`: `floor` (a plain axum server answering what the demo's todos
//! service answers, the floor the gateway is compared with) and `probe` (a small HTTP/1.1 client
//! that waits for a response or records the outcome of every request under load).
