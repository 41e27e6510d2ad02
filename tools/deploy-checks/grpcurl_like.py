"""Calls a votemesh gRPC server the way grpcurl does: with no .proto files,
everything learnt from server reflection (v1alpha, what older grpcurl
releases speak), requests and responses as proto3 JSON.

Usage: grpcurl_like.py HOST:PORT list
       grpcurl_like.py HOST:PORT SERVICE/METHOD [REQUEST_JSON]

Prints the response as JSON (the first message of a server stream).
"""

import json
import sys

import grpc
from google.protobuf import descriptor_pool, json_format, message_factory
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)


def main(address, method, request_json="{}"):
    channel = grpc.insecure_channel(address)
    database = ProtoReflectionDescriptorDatabase(channel)
    if method == "list":
        print("\n".join(sorted(database.get_services())))
        return 0
    service_name, method_name = method.rsplit("/", 1)
    pool = descriptor_pool.DescriptorPool(database)
    rpc = pool.FindServiceByName(service_name).FindMethodByName(method_name)
    request_class = message_factory.GetMessageClass(rpc.input_type)
    response_class = message_factory.GetMessageClass(rpc.output_type)
    request = json_format.Parse(request_json, request_class())
    path = f"/{service_name}/{method_name}"
    if rpc.server_streaming:
        call = channel.unary_stream(path, request_serializer=request_class.SerializeToString, response_deserializer=response_class.FromString)
        response = next(iter(call(request, timeout=10)))
    else:
        call = channel.unary_unary(path, request_serializer=request_class.SerializeToString, response_deserializer=response_class.FromString)
        response = call(request, timeout=10)
    print(json.dumps(json_format.MessageToDict(response, preserving_proto_field_name=True)))
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
