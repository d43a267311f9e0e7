"""The reference stack: the handler style the AWS PyTorch inference toolkit documents.

PIL open, Resize(256), CenterCrop(224), ToTensor, Normalize per request, and ``model(x)``
without inference mode; JSON output. Served by the bench as a user ``code/inference.py``
on the same Multi Model Server, so only the handler differs from scorer's defaults.
"""

import io
import json
import os

import torch
from PIL import Image
from safetensors.torch import load_file
from torchvision import transforms

from scorer.models.family import build_network
from scorer.models.spec import ModelSpec

TRANSFORM = transforms.Compose(
    [
        transforms.Resize(256),
        transforms.CenterCrop(224),
        transforms.ToTensor(),
        transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
    ]
)


def model_fn(model_dir):
    spec = ModelSpec.read(model_dir)
    model = build_network(spec)
    model.load_state_dict(load_file(os.path.join(model_dir, spec.weights)))
    model.eval()
    return model


def input_fn(request_body, content_type):
    image = Image.open(io.BytesIO(request_body)).convert("RGB")
    return TRANSFORM(image).unsqueeze(0)


def predict_fn(input_data, model):
    # as the toolkit's default_predict_fn: the GPU when there is one, device move and
    # eval() per request, no_grad
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with torch.no_grad():
        model = model.to(device)
        model.eval()
        return model(input_data.to(device))


def output_fn(prediction, accept):
    return json.dumps(prediction.tolist()), accept
