// Formatting an existing mapping overwrites whatever heap it holds, with every live
// process's blocks and the kept blocks of a file-backed segment: safe code must not be
// able to do that to a segment that is in use (here, a file a server is serving).
use shm_core::HeapConfig;
use shm_host::{FileSystem, Segment, SegmentName, Server, ServerOptions, System};

fn main() {
    let files = FileSystem::file("/tmp/segment-format-needs-unsafe.heap");
    let server = Server::create_on(files.clone(), "live", ServerOptions::default()).unwrap();
    let name = SegmentName::new("live").unwrap();
    let mapping = files.open(&name).unwrap();
    let _wiped = Segment::format(files, &name, mapping, HeapConfig::default());
    drop(server);
}
