//! gRPC server reflection in both versions, for every Taskmesh server: grpcurl speaks v1,
//! while other clients (grpcio-reflection, the official Python one) speak only v1alpha.

use tonic_reflection::server::{Builder, Error, v1, v1alpha};

/// The two reflection services of one server, to add to its `tonic` router (tonic-reflection
/// names their implementations only as `impl ServerReflection`, hence the parameters).
pub struct Reflection<V1, V1Alpha> {
    pub v1: v1::ServerReflectionServer<V1>,
    pub v1alpha: v1alpha::ServerReflectionServer<V1Alpha>,
}

/// Describes the files of `descriptor_sets` and lists every service they declare.
pub fn of(
    descriptor_sets: &[&'static [u8]],
) -> Result<Reflection<impl v1::ServerReflection, impl v1alpha::ServerReflection>, Error> {
    build(descriptor_sets, None)
}

/// Describes the files of `descriptor_sets` but lists only `services` (fully qualified
/// names) and reflection itself: for a server that serves part of what its files declare
/// (a subscriber serves no AppCallbackAlpha).
pub fn listing(
    descriptor_sets: &[&'static [u8]],
    services: &[&str],
) -> Result<Reflection<impl v1::ServerReflection, impl v1alpha::ServerReflection>, Error> {
    build(descriptor_sets, Some(services))
}

fn build(
    descriptor_sets: &[&'static [u8]],
    services: Option<&[&str]>,
) -> Result<Reflection<impl v1::ServerReflection, impl v1alpha::ServerReflection>, Error> {
    // The two builders differ only in the reflection service each lists as its own.
    let builder = |reflection_service: &str| {
        let builder = descriptor_sets
            .iter()
            .fold(Builder::configure(), |builder, set| {
                builder.register_encoded_file_descriptor_set(set)
            });
        match services {
            None => builder,
            Some(services) => services
                .iter()
                .copied()
                .chain([reflection_service])
                .fold(builder, |builder, name| builder.with_service_name(name)),
        }
    };
    Ok(Reflection {
        v1: builder(V1).build_v1()?,
        v1alpha: builder(V1ALPHA).build_v1alpha()?,
    })
}

const V1: &str = "grpc.reflection.v1.ServerReflection";
const V1ALPHA: &str = "grpc.reflection.v1alpha.ServerReflection";
