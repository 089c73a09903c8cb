#!/usr/bin/env python3
"""Serves a bundle's TorchScript ranking model from KServe's model server (the Open Inference
Protocol, v2 REST, with Triton's binary tensor extension), for the origin's remote ranker
(`[ranker.remote]`, origin/src/ranking/remote.rs).

    python scripts/oip_server.py --bundle BUNDLE_DIR [--name cascade-ranker] [--port 8500]

KServe (pip `kserve`, installed by scripts/setup.sh) does the protocol: `GET /v2/health/ready`,
`GET /v2/models/{name}`, `POST /v2/models/{name}/infer` with JSON or binary tensors. This file is
only the model: one FP32 input `[rows, input_width]`, one FP32 output `score` `[rows]`, the same
TorchScript file the origin loads in process (so the scores agree to float rounding).
"""

import argparse
import importlib.metadata
import json
import os
import sys
import uuid

import numpy as np
import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", required=True, help="the bundle folder (model.pt, metadata.json)")
    parser.add_argument("--name", default="cascade-ranker", help="the model's name in the URL")
    parser.add_argument("--port", type=int, default=8500)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args, _ = parser.parse_known_args()
    # KServe reads its own flags from sys.argv at import: give it only ours' port.
    sys.argv = [sys.argv[0], f"--http_port={args.port}", "--enable_grpc=false"]
    from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer
    from kserve.errors import InvalidInput

    torch.set_num_threads(args.threads)
    metadata = json.load(open(os.path.join(args.bundle, "metadata.json")))
    width = int(metadata["input_width"])
    model_file = os.path.join(args.bundle, "model.pt")

    class Ranker(Model):
        def __init__(self) -> None:
            super().__init__(args.name)
            self.module = torch.jit.load(model_file, map_location="cpu").eval()
            self.ready = True

        async def predict(self, payload: InferRequest, headers=None, response_headers=None) -> InferResponse:
            if len(payload.inputs) != 1 or payload.inputs[0].datatype != "FP32":
                raise InvalidInput("expected one FP32 input [rows, input_width]")
            rows = payload.inputs[0].as_numpy().reshape(-1, width)
            with torch.no_grad():
                scores = self.module(torch.from_numpy(np.ascontiguousarray(rows, dtype=np.float32)))
            scores = scores.reshape(-1).to(torch.float32).numpy()
            output = InferOutput(name="score", shape=list(scores.shape), datatype="FP32")
            binary = payload.use_binary_outputs  # the request's "binary_data_output" parameter
            output.set_data_from_numpy(scores, binary_data=binary)
            response_id = payload.id or uuid.uuid4().hex  # the protocol makes the request id optional
            return InferResponse(model_name=self.name, infer_outputs=[output], response_id=response_id,
                                 use_binary_outputs=binary, requested_outputs=payload.request_outputs)

    version = importlib.metadata.version("kserve")
    print(f"[oip] kserve {version}: {args.name} from {model_file} (width {width}) on :{args.port}", flush=True)
    ModelServer(http_port=args.port, enable_grpc=False, workers=1).start([Ranker()])


if __name__ == "__main__":
    main()
