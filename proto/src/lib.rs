//! Generated types and gRPC stubs of the Taskmesh APIs.

pub mod tasks {
    pub mod v1 {
        #![allow(clippy::all, clippy::pedantic, missing_docs)]
        tonic::include_proto!("taskmesh.tasks.v1");
    }
}

pub mod notifications {
    pub mod v1 {
        #![allow(clippy::all, clippy::pedantic, missing_docs)]
        tonic::include_proto!("taskmesh.notifications.v1");
    }
}

pub mod analytics {
    pub mod v1 {
        #![allow(clippy::all, clippy::pedantic, missing_docs)]
        tonic::include_proto!("taskmesh.analytics.v1");
    }
}

/// Every Taskmesh file descriptor, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/taskmesh_descriptor.bin"));
