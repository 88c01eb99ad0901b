"""A protoc plugin that runs one of the generators built into grpcio-tools' protoc.

buf runs local plugins: executables that read a CodeGeneratorRequest on stdin and write a
CodeGeneratorResponse to stdout. The Python generators (python, pyi, grpc_python) are compiled
into protoc itself, and PyPI ships that protoc only as the grpcio-tools extension module, not as
protoc-gen-* executables. This script bridges the two: it writes the request's descriptors to a
temporary FileDescriptorSet, runs the built-in generator over it with --descriptor_set_in, and
answers with the files the generator wrote. No network, no protoc binary on PATH.

Usage (scripts/install-codegen-tools.sh writes .tools/bin/protoc-gen-<GENERATOR> wrappers):

    python protoc_gen_grpc_tools.py GENERATOR < request > response

GENERATOR is python, pyi or grpc_python. Plugin options (buf.gen.yaml `opt`):

    import_prefix=PKG  Rewrite imports of modules generated from this request's files (everything
                       but google/*) from `a.b` to `PKG.a.b`, and the module name under
                       which the message classes register, so that the generated tree can live in
                       a subpackage such as `commonware_metadata.gen`. protoc and grpc_python
                       import sibling modules by absolute name derived from the .proto path, and
                       the grpc_python that grpcio-tools embeds has no option to change that.
    anything else      Passed through to the generator as --GENERATOR_opt.

Invariants: output is a pure function of the request (files sorted by name, no timestamps);
a generator failure is reported through CodeGeneratorResponse.error, with protoc's own message
on stderr.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile

from google.protobuf import descriptor_pb2
from google.protobuf.compiler import plugin_pb2
from grpc_tools import protoc

GENERATORS = ("python", "pyi", "grpc_python")


def module_name(proto_path: str) -> str:
    """Returns the Python module protoc generates for a .proto path (a/b-c.proto -> a.b_c_pb2)."""
    stem = proto_path[: -len(".proto")] if proto_path.endswith(".proto") else proto_path
    return stem.replace("-", "_").replace("/", ".") + "_pb2"


def add_import_prefix(source: str, modules: set[str], prefix: str) -> str:
    """Prefixes `prefix.` to every import of one of `modules` (or of their _grpc siblings)."""

    def known(module: str) -> bool:
        return module in modules or module.removesuffix("_grpc") in modules

    def from_import(match: re.Match[str]) -> str:
        indent, package, name, rest = match.group(1, 2, 3, 4)
        if not known(f"{package}.{name}"):
            return match.group(0)
        return f"{indent}from {prefix}.{package} import {name}{rest}"

    def plain_import(match: re.Match[str]) -> str:
        indent, module, rest = match.group(1, 2, 3)
        if not known(module):
            return match.group(0)
        package, _, name = f"{prefix}.{module}".rpartition(".")
        return f"{indent}from {package} import {name}{rest}"

    def builder_module(match: re.Match[str]) -> str:
        if not known(match.group(2)):
            return match.group(0)
        return f"{match.group(1)}{prefix}.{match.group(2)}{match.group(3)}"

    source = re.sub(r"^([ \t]*)from ([\w.]+) import (\w+)((?: as \w+)?[ \t]*)$", from_import, source, flags=re.M)
    source = re.sub(r"^([ \t]*)import ([\w.]+)((?: as \w+)?[ \t]*)$", plain_import, source, flags=re.M)
    # _builder.BuildTopDescriptorsAndMessages(DESCRIPTOR, 'a.b_pb2', _globals) sets __module__ of
    # the message classes; it must name the real module for pickling and repr to work.
    return re.sub(r"(BuildTopDescriptorsAndMessages\(DESCRIPTOR, ')([\w.]+)(')", builder_module, source)


def generate(generator: str, request: plugin_pb2.CodeGeneratorRequest) -> plugin_pb2.CodeGeneratorResponse:
    """Runs `generator` over the request's files with grpcio-tools' protoc."""
    response = plugin_pb2.CodeGeneratorResponse(
        supported_features=plugin_pb2.CodeGeneratorResponse.FEATURE_PROTO3_OPTIONAL
    )
    prefix = ""
    passthrough = []
    for option in filter(None, request.parameter.split(",")):
        if option.startswith("import_prefix="):
            prefix = option.removeprefix("import_prefix=").strip(".")
        else:
            passthrough.append(option)

    with tempfile.TemporaryDirectory(prefix="protoc-gen-grpc-tools-") as tmp:
        descriptor_set = os.path.join(tmp, "input.binpb")
        out = os.path.join(tmp, "out")
        os.mkdir(out)
        with open(descriptor_set, "wb") as f:
            f.write(descriptor_pb2.FileDescriptorSet(file=request.proto_file).SerializeToString())
        args = ["protoc", f"--descriptor_set_in={descriptor_set}", f"--{generator}_out={out}"]
        if passthrough:
            args.append(f"--{generator}_opt={','.join(passthrough)}")
        args.extend(request.file_to_generate)
        # stdout carries the response: point fd 1 at stderr while protoc runs in-process.
        saved_stdout = os.dup(1)
        os.dup2(2, 1)
        try:
            code = protoc.main(args)
        finally:
            os.dup2(saved_stdout, 1)
            os.close(saved_stdout)
        if code != 0:
            response.error = f"grpcio-tools protoc --{generator}_out exited with {code} (its message is above)"
            return response

        # google/* (protobuf's well-known types, google.rpc.Status, ...) come from the protobuf
        # and googleapis-common-protos packages under their own names: never prefixed.
        modules = {module_name(f.name) for f in request.proto_file if not f.name.startswith("google/")}
        names = []
        for directory, _, files in os.walk(out):
            names.extend(os.path.relpath(os.path.join(directory, name), out) for name in files)
        for name in sorted(names):
            with open(os.path.join(out, name), encoding="utf-8") as f:
                content = f.read()
            if prefix:
                content = add_import_prefix(content, modules, prefix)
            response.file.add(name=name.replace(os.sep, "/"), content=content)
    return response


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[1] not in GENERATORS:
        print(f"usage: {argv[0]} {{{'|'.join(GENERATORS)}}} < CodeGeneratorRequest", file=sys.stderr)
        return 2
    request = plugin_pb2.CodeGeneratorRequest.FromString(sys.stdin.buffer.read())
    sys.stdout.buffer.write(generate(argv[1], request).SerializeToString())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
