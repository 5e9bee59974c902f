//! contiv-cni: the CNI plugin binary the container runtime executes. All of its logic is
//! in the `contiv-cni` library; this is its process entry point.
fn main() {
    std::process::exit(contiv_cni::plugin::main_with_process_env());
}
