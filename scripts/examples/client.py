#!/usr/bin/python3
"""Example streaming client of dsv4-server, for the system Python with Debian's python3-grpcio.

Message classes are generated at run time from proto/dsv4/v1/inference.proto into a temporary folder: with
grpc_tools (python3-grpc-tools / pip grpcio-tools) when it is installed, otherwise with the `protoc` compiler
the C++ build already needs (protobuf-compiler). No service stubs are needed: the calls go through the
channel's generic unary_stream / unary_unary methods with the full method names.

  /usr/bin/python3 scripts/examples/client.py --address 127.0.0.1:50051 --prompt "Hello"
  /usr/bin/python3 scripts/examples/client.py --address ... --prompt-tokens 0,370,40 --temperature 0
"""
import argparse
import importlib
import os
import shutil
import subprocess
import sys
import tempfile

import grpc

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PROTO_DIR = os.path.join(REPO, "proto")


def load_messages():
    """Compiles inference.proto to Python and imports it."""
    out = tempfile.mkdtemp(prefix="dsv4_client_")
    proto = os.path.join(PROTO_DIR, "dsv4", "v1", "inference.proto")
    try:
        from grpc_tools import protoc  # type: ignore
        rc = protoc.main(["protoc", "-I" + PROTO_DIR, "--python_out=" + out, proto])
        if rc != 0:
            raise SystemExit("grpc_tools.protoc failed on " + proto)
    except ImportError:
        exe = shutil.which("protoc")
        if exe is None:
            raise SystemExit("neither grpc_tools nor protoc is installed: "
                             "apt-get install protobuf-compiler (or python3-grpc-tools)")
        subprocess.run([exe, "-I" + PROTO_DIR, "--python_out=" + out, proto], check=True)
    sys.path.insert(0, out)
    return importlib.import_module("dsv4.v1.inference_pb2")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--address", default="127.0.0.1:50051")
    p.add_argument("--token", default="", help="bearer token")
    p.add_argument("--tls-ca", default="", help="PEM root certificate: connect with TLS")
    p.add_argument("--prompt", default="")
    p.add_argument("--system", default="")
    p.add_argument("--prompt-tokens", default="", help="raw token ids, comma-separated")
    p.add_argument("--thinking", choices=["none", "high", "max"], default="none")
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--print-token-ids", action="store_true")
    args = p.parse_args()
    if bool(args.prompt) == bool(args.prompt_tokens):
        p.error("give exactly one of --prompt and --prompt-tokens")

    pb = load_messages()
    req = pb.GenerateRequest(max_tokens=args.max_tokens)
    req.sampling.temperature = args.temperature
    req.sampling.top_p = args.top_p
    if args.seed is not None:
        req.sampling.seed = args.seed
    if args.prompt:
        if args.system:
            req.chat.messages.add(role=pb.ROLE_SYSTEM, content=args.system)
        req.chat.messages.add(role=pb.ROLE_USER, content=args.prompt)
        req.chat.thinking = {"none": pb.THINKING_NONE, "high": pb.THINKING_HIGH, "max": pb.THINKING_MAX}[args.thinking]
    else:
        req.tokens.token_ids.extend(int(t) for t in args.prompt_tokens.split(","))

    if args.tls_ca:
        with open(args.tls_ca, "rb") as f:
            channel = grpc.secure_channel(args.address, grpc.ssl_channel_credentials(root_certificates=f.read()))
    else:
        channel = grpc.insecure_channel(args.address)
    generate = channel.unary_stream("/dsv4.v1.Inference/Generate",
                                    request_serializer=pb.GenerateRequest.SerializeToString,
                                    response_deserializer=pb.GenerateResponse.FromString)
    metadata = [("authorization", "Bearer " + args.token)] if args.token else []
    ids, last, in_reasoning, in_content = [], None, False, False
    try:
        for m in generate(req, metadata=metadata, timeout=600):
            ids.extend(m.token_ids)
            if m.reasoning_delta:
                if not in_reasoning:
                    print("[reasoning]")
                in_reasoning = True
                print(m.reasoning_delta, end="", flush=True)
            if m.content_delta:
                if in_reasoning and not in_content:
                    print("\n[content]")
                in_content = True
                print(m.content_delta, end="", flush=True)
            for call in m.tool_calls:
                print("\n[tool_call]", call.name, call.arguments_json)
            if m.finish_reason:
                last = m
    except grpc.RpcError as e:
        print("\nclient.py: %s: %s" % (e.code().name, e.details()), file=sys.stderr)
        return 100 + e.code().value[0]
    reason = pb.FinishReason.Name(last.finish_reason) if last else "none"
    usage = last.usage if last else pb.Usage()
    print("\n[finish] %s (%d prompt tokens, %d generated)" % (reason, usage.prompt_tokens, usage.completion_tokens))
    if args.print_token_ids:
        print("[token_ids] " + ",".join(str(i) for i in ids))
    return 0


if __name__ == "__main__":
    sys.exit(main())
