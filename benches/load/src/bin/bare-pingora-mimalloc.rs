//! The bare pingora passthrough with mimalloc as its allocator (as Tollgate uses): the tuning run
//! shows what the allocator alone changes. Same arguments as `bare-pingora`.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    tollgate_bench::run();
}
