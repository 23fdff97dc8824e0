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

/// Dapr's AppCallback, AppCallbackHealthCheck and AppCallbackAlpha services (v1.18.1, with
/// their imports), for the subscribers' gRPC server reflection.
pub const DAPR_APP_CALLBACK_FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(
    env!("OUT_DIR"),
    "/dapr_app_callback_descriptor.bin"
));
