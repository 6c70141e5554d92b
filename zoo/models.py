"""The model zoo: every torchvision and torchaudio model builder, with a small seeded input.

One file serves two uses:

- As a torchlens model file. `TORCHLENS_ZOO_MODEL=resnet18 torchlens extract zoo/models.py -o run`
  builds the named model (`build_model()`) and its input (`example_input()`). validate reruns the
  same file, so it needs the same variable.
- As a script for `scripts/zoo.mjs`: `python3 zoo/models.py list` prints the catalogue as JSON
  (name, family, the input used, and why a model is not run, if it is not).

Nothing downloads: every builder gets `weights=None` (and `weights_backbone=None`). Images are
smaller than the models were trained on wherever the architecture allows; each entry's `input`
says what was used.
"""

import json
import os
import sys
from typing import Any, Callable, Dict, List, NamedTuple, Optional

import torch
from torch import nn

ENV = "TORCHLENS_ZOO_MODEL"
FAMILIES = ("classification", "detection", "segmentation", "video", "optical_flow", "quantization", "audio")


class Entry(NamedTuple):
    name: str
    family: str
    build: Callable[[], nn.Module]
    example: Callable[[], Any]
    input: str  # what example() gives, for the coverage table
    skip: Optional[str] = None  # why it is not run on this machine


def _gen(seed: int = 1) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _randn(*shape: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(*shape, generator=_gen(seed))


def _describe(shape: List[int], dtype: str = "") -> str:
    return "x".join(str(s) for s in shape) + (f" {dtype}" if dtype else "")


# -- torchvision ------------------------------------------------------------------------------

def _tv_entries() -> List[Entry]:
    import torchvision
    from torchvision import models as tvm

    def get(name: str, **kwargs: Any) -> Callable[[], nn.Module]:
        def build() -> nn.Module:
            return tvm.get_model(name, weights=None, **kwargs).eval()
        return build

    def image(*shape: int) -> Callable[[], Any]:
        return lambda: _randn(*shape)

    entries: List[Entry] = []
    families = [
        ("classification", tvm),
        ("detection", tvm.detection),
        ("segmentation", tvm.segmentation),
        ("video", tvm.video),
        ("optical_flow", tvm.optical_flow),
        ("quantization", tvm.quantization),
    ]
    for family, module in families:
        for name in tvm.list_models(module=module):
            kwargs: Dict[str, Any] = {}
            shape = [1, 3, 64, 64]
            example: Optional[Callable[[], Any]] = None
            desc: Optional[str] = None
            if family == "classification":
                if name == "inception_v3":
                    shape = [1, 3, 96, 96]  # at least 75x75
                elif name == "maxvit_t":
                    shape = [1, 3, 224, 224]  # every stage must divide by the 7x7 partition
                elif name.startswith("vit_"):
                    size = 56 if name == "vit_h_14" else 64
                    kwargs["image_size"] = size  # position embeddings are built for this size
                    shape = [1, 3, size, size]
            elif family == "detection":
                kwargs["weights_backbone"] = None
                if not name.startswith("ssd"):
                    kwargs.update(min_size=128, max_size=128)  # the transform resizes to this
                example = lambda: ([_randn(3, 128, 128).sigmoid()],)  # noqa: E731 - a list of images
                desc = "[3x128x128] (list of one image)"
                if name.startswith("ssd"):
                    desc += ", resized by the model to " + ("300x300" if "300" in name else "320x320")
            elif family == "segmentation":
                kwargs["weights_backbone"] = None
            elif family == "video":
                shape = [1, 3, 4, 64, 64]
                if name == "s3d":
                    shape = [1, 3, 16, 224, 224]  # its final pool is (2, 7, 7): needs T/8 >= 2 and 224x224
                elif name.startswith("mvit"):
                    shape = [1, 3, 16, 224, 224]  # the builders fix the size their position embeddings take
            elif family == "optical_flow":
                example = lambda: (_randn(1, 3, 128, 128, seed=1), _randn(1, 3, 128, 128, seed=2))  # noqa: E731
                desc = "1x3x128x128, 1x3x128x128 (two frames)"
            elif family == "quantization":
                # weights=None with quantize=True: calibrated on random data; fbgemm is missing from
                # this torch build, qnnpack is there.
                kwargs.update(quantize=True, backend="qnnpack")
                size = 96 if name == "quantized_inception_v3" else 64
                # uniform [0, 1) like the data quantize_model calibrates on: normal inputs would
                # saturate whole layers (every value at the end of the quantized range)
                example = lambda size=size: torch.rand(1, 3, size, size, generator=_gen())  # noqa: E731
                desc = f"1x3x{size}x{size} uniform [0, 1)"
            if example is None:
                example = image(*shape)
                desc = _describe(shape)
            build = get(name, **kwargs)
            if family == "quantization":
                build = _quantized(build)
            entries.append(Entry(name, family, build, example, desc or ""))
    del torchvision
    return entries


def _quantized(build: Callable[[], nn.Module]) -> Callable[[], nn.Module]:
    def wrapped() -> nn.Module:
        torch.backends.quantized.engine = "qnnpack"
        return build()
    return wrapped


# -- torchaudio ---------------------------------------------------------------------------------

class _Tacotron2Infer(nn.Module):
    """Tacotron2's autoregressive inference (`infer`), a loop that stops on the gate."""

    def __init__(self) -> None:
        super().__init__()
        from torchaudio.models import Tacotron2
        self.tacotron2 = Tacotron2(decoder_max_step=12)

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor):
        return self.tacotron2.infer(tokens, lengths)


class _EmformerInfer(nn.Module):
    """Emformer's streaming `infer`: two segments, the state of the first fed to the second."""

    def __init__(self) -> None:
        super().__init__()
        from torchaudio.models import Emformer
        self.emformer = Emformer(input_dim=80, num_heads=4, ffn_dim=256, num_layers=4, segment_length=4,
                                 left_context_length=4, right_context_length=1, max_memory_size=2)

    def forward(self, chunk1: torch.Tensor, chunk2: torch.Tensor, lengths: torch.Tensor):
        out1, _, state = self.emformer.infer(chunk1, lengths, None)
        out2, out_lengths, _ = self.emformer.infer(chunk2, lengths, state)
        return out1, out2, out_lengths


class _RNNTBeamSearch(nn.Module):
    """Beam search over an Emformer RNN-T: data-dependent Python control flow around the model."""

    def __init__(self) -> None:
        super().__init__()
        from torchaudio.models import RNNTBeamSearch, emformer_rnnt_base
        self.search = RNNTBeamSearch(emformer_rnnt_base(num_symbols=64), blank=63, step_max_tokens=3)

    def forward(self, features: torch.Tensor, length: torch.Tensor):
        hypos = self.search(features, length, 2)
        return [h[1] for h in hypos]  # each hypothesis's predictor output


def _audio_entries() -> List[Entry]:
    try:
        import torchaudio.models as am
    except ImportError:
        return []

    def lengths(*values: int) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.int64)

    def tokens(*shape: int, high: int) -> torch.Tensor:
        return torch.randint(1, high, shape, generator=_gen(3))

    wave = lambda: (_randn(1, 8000),)  # noqa: E731 - 0.5 s at 16 kHz
    wave_desc = "1x8000 waveform"
    entries = []
    for name in ("wav2vec2_base", "wav2vec2_large", "wav2vec2_large_lv60k", "hubert_base", "hubert_large",
                 "hubert_xlarge"):
        entries.append(Entry(name, "audio", _eval(getattr(am, name)), wave, wave_desc))
    # HuBERT pre-training model: masks frames (numpy RNG) and scores them against labels.
    for name in ("hubert_pretrain_base", "hubert_pretrain_large", "hubert_pretrain_xlarge"):
        entries.append(Entry(name, "audio", _eval(getattr(am, name)),
                             lambda: (_randn(1, 8000), tokens(1, 24, high=100)),
                             "1x8000 waveform, 1x24 int64 labels"))
    entries += [
        Entry("conformer", "audio",
              _eval(lambda: am.Conformer(input_dim=80, num_heads=4, ffn_dim=128, num_layers=4,
                                         depthwise_conv_kernel_size=31)),
              lambda: (_randn(1, 50, 80), lengths(50)), "1x50x80 features, lengths [50]"),
        Entry("conv_tasnet_base", "audio", _eval(lambda: am.conv_tasnet_base(num_sources=2)),
              lambda: (_randn(1, 1, 8000),), "1x1x8000 waveform"),
        Entry("deepspeech", "audio", _eval(lambda: am.DeepSpeech(n_feature=80)),
              lambda: (_randn(1, 1, 50, 80),), "1x1x50x80 features"),
        Entry("wav2letter", "audio", _eval(lambda: am.Wav2Letter(num_classes=40, input_type="waveform")),
              lambda: (_randn(1, 1, 8000),), "1x1x8000 waveform"),
        Entry("wavernn", "audio",
              _eval(lambda: am.WaveRNN(upsample_scales=[5, 5, 11], n_classes=256, hop_length=275)),
              lambda: (_randn(1, 1, 1650), _randn(1, 1, 128, 10)),
              "1x1x1650 waveform, 1x1x128x10 spectrogram"),
        Entry("tacotron2", "audio", _eval(lambda: am.Tacotron2()),
              lambda: (tokens(1, 10, high=148), lengths(10), _randn(1, 80, 20), lengths(20)),
              "1x10 int64 tokens, lengths [10], 1x80x20 mel, lengths [20] (teacher forcing)"),
        Entry("tacotron2_infer", "audio", _eval(_Tacotron2Infer),
              lambda: (tokens(1, 10, high=148), lengths(10)),
              "1x10 int64 tokens, lengths [10]; infer(), at most 12 decoder steps"),
        Entry("emformer", "audio",
              _eval(lambda: am.Emformer(input_dim=80, num_heads=4, ffn_dim=256, num_layers=4, segment_length=4,
                                        right_context_length=1)),
              lambda: (_randn(1, 17, 80), lengths(16)), "1x17x80 features (16 + 1 right context), lengths [16]"),
        Entry("emformer_infer", "audio", _eval(_EmformerInfer),
              lambda: (_randn(1, 5, 80, seed=1), _randn(1, 5, 80, seed=2), lengths(4)),
              "two 1x5x80 chunks (4 + 1 right context), lengths [4]; streaming infer()"),
        Entry("emformer_rnnt_base", "audio", _eval(lambda: am.emformer_rnnt_base(num_symbols=4097)),
              lambda: (_randn(1, 84, 80), lengths(80), tokens(1, 6, high=4096), lengths(6)),
              "1x84x80 features, lengths [80], 1x6 int64 targets, lengths [6]"),
        Entry("rnnt_beam_search", "audio", _eval(_RNNTBeamSearch),
              lambda: (_randn(1, 84, 80), lengths(80)),
              "1x84x80 features, lengths [80]; beam width 2"),
    ]
    for name in ("hdemucs_low", "hdemucs_medium", "hdemucs_high"):
        entries.append(Entry(name, "audio", _eval(lambda n=name: getattr(am, n)(sources=["bass", "drums", "other", "vocals"])),
                             lambda: (_randn(1, 2, 8000),), "1x2x8000 stereo waveform"))
    return entries


def _eval(build: Callable[[], nn.Module]) -> Callable[[], nn.Module]:
    return lambda: build().eval()


# -- the catalogue --------------------------------------------------------------------------------

def catalogue() -> List[Entry]:
    return _tv_entries() + _audio_entries()


def _selected() -> Entry:
    name = os.environ.get(ENV)
    if not name:
        raise RuntimeError(f"set {ENV} to a model name (python3 zoo/models.py list shows them)")
    for entry in catalogue():
        if entry.name == name:
            return entry
    raise RuntimeError(f"{ENV}={name!r}: no such model in the zoo")


def build_model() -> nn.Module:
    entry = _selected()
    torch.manual_seed(0)
    return entry.build()


def example_input() -> Any:
    return _selected().example()


def _versions() -> Dict[str, Optional[str]]:
    import torchvision
    try:
        import torchaudio
        audio: Optional[str] = torchaudio.__version__
    except ImportError:
        audio = None
    return {"torch": torch.__version__, "torchvision": torchvision.__version__, "torchaudio": audio,
            "python": sys.version.split()[0]}


if __name__ == "__main__":
    if sys.argv[1:2] != ["list"]:
        sys.exit("usage: python3 zoo/models.py list")
    print(json.dumps({"versions": _versions(),
                      "models": [{"name": e.name, "family": e.family, "input": e.input, "skip": e.skip}
                                 for e in catalogue()]}))
