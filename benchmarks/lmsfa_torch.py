"""LMSF-A (scale 'n') in plain eager PyTorch, written from ../shared/golden/README.md, so that
`vs_ultralytics.py` can time PyTorch itself on this network.

A reference-style implementation (nn.Conv2d / nn.BatchNorm2d / nn.GroupNorm ..., the direct form of
every module, as the improved-YOLOv8 code base computes it). State-dict names match the golden file
(`model.<i>. ...`); `golden_differences` checks it against the golden tensors.

`build_model(nc)` -> training-form network. `forward(images)`:
  train mode: ([P3, P4, P5] raw head maps (B, 64 + nc, H/s, W/s), mask coefficients (B, 32, N),
              protos (B, 32, H/4, W/4))                                        (Ultralytics Segment)
  eval mode:  (decoded (B, 4 + nc + 32, N), ([P3, P4, P5], mask coefficients, protos))
"""
import math
import pathlib

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

GOLDEN_NPZ = pathlib.Path(__file__).resolve().parents[2] / "shared" / "golden" / "lmsfa_n_nc4_golden.npz"


# ----------------------------------------------------------------------------- basic blocks
class Conv(nn.Module):
    """Conv2d (no bias, padding k//2) -> BatchNorm2d -> SiLU."""

    def __init__(self, c1, c2, k=1, s=1):
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, k // 2, bias=False)
        self.bn = nn.BatchNorm2d(c2)
        self.act = nn.SiLU()

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


class ConvGN(nn.Module):
    """Conv2d (no bias, padding k//2) -> GroupNorm(16) -> SiLU (the head's Conv_GN)."""

    def __init__(self, c1, c2, k=1):
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, 1, k // 2, bias=False)
        self.gn = nn.GroupNorm(16, c2)
        self.act = nn.SiLU()

    def forward(self, x):
        return self.act(self.gn(self.conv(x)))


class Conv2dBN(nn.Sequential):
    """RepViT's Conv2d_BN: conv (no bias, stride 1, padding k//2) 'c' followed by BatchNorm2d 'bn',
    no activation."""

    def __init__(self, c1, c2, k=1, g=1, bn_weight_init=1.0):
        super().__init__()
        self.add_module("c", nn.Conv2d(c1, c2, k, 1, k // 2, groups=g, bias=False))
        self.add_module("bn", nn.BatchNorm2d(c2))
        nn.init.constant_(self.bn.weight, bn_weight_init)
        nn.init.constant_(self.bn.bias, 0.0)


class Residual(nn.Module):
    """x + fn(x)."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return x + self.fn(x)


# ----------------------------------------------------------------------------- C2f_Pro
class RepVGGDW(nn.Module):
    """BN_o(BN_a(DW3x3(x)) + DW1x1(x) + x), DW1x1 with bias."""

    def __init__(self, c):
        super().__init__()
        self.conv = Conv2dBN(c, c, 3, g=c)
        self.conv1 = nn.Conv2d(c, c, 1, 1, 0, groups=c, bias=True)
        self.bn = nn.BatchNorm2d(c)

    def forward(self, x):
        return self.bn((self.conv(x) + self.conv1(x)) + x)


class EMA(nn.Module):
    """Efficient multi-scale attention (factor 8), direct form with its GroupNorm and 3x3 conv."""

    def __init__(self, channels, factor=8):
        super().__init__()
        self.groups = factor
        cg = channels // factor
        self.softmax = nn.Softmax(-1)
        self.agp = nn.AdaptiveAvgPool2d((1, 1))
        self.pool_h = nn.AdaptiveAvgPool2d((None, 1))
        self.pool_w = nn.AdaptiveAvgPool2d((1, None))
        self.gn = nn.GroupNorm(cg, cg)
        self.conv1x1 = nn.Conv2d(cg, cg, 1)
        self.conv3x3 = nn.Conv2d(cg, cg, 3, padding=1)

    def forward(self, x):
        b, c, h, w = x.shape
        n, cg = b * self.groups, c // self.groups
        g = x.reshape(n, cg, h, w)                                      # (B*8, cg, H, W)
        pooled_h = self.pool_h(g)                                       # (B*8, cg, H, 1)
        pooled_w = self.pool_w(g).permute(0, 1, 3, 2)                   # (B*8, cg, W, 1)
        gates = self.conv1x1(torch.cat([pooled_h, pooled_w], dim=2))
        gate_h, gate_w = torch.split(gates, [h, w], dim=2)
        x1 = self.gn(g * gate_h.sigmoid() * gate_w.permute(0, 1, 3, 2).sigmoid())
        x2 = self.conv3x3(g)
        s1 = self.softmax(self.agp(x1).reshape(n, -1, 1).permute(0, 2, 1))  # (B*8, 1, cg)
        s2 = self.softmax(self.agp(x2).reshape(n, -1, 1).permute(0, 2, 1))
        weights = torch.matmul(s1, x2.reshape(n, cg, -1)) + \
            torch.matmul(s2, x1.reshape(n, cg, -1))                      # (B*8, 1, H*W)
        return (g * weights.reshape(n, 1, h, w).sigmoid()).reshape(b, c, h, w)


class RepViTBlockEMA(nn.Module):
    """RepViT block (stride 1) whose token mixer is RepVGGDW followed by EMA."""

    def __init__(self, c):
        super().__init__()
        self.token_mixer = nn.Sequential(RepVGGDW(c), EMA(c))
        self.channel_mixer = Residual(nn.Sequential(
            Conv2dBN(c, 2 * c, 1),
            nn.GELU(),
            Conv2dBN(2 * c, c, 1, bn_weight_init=0.0),   # as in RepViT: this BN starts at zero
        ))

    def forward(self, x):
        return self.channel_mixer(self.token_mixer(x))


class C2fPro(nn.Module):
    """C2f with RepViTBlock_EMA bottlenecks (YAML: C2f_Pro, code base: C2f_RVB_EMA)."""

    def __init__(self, c1, c2, n=1):
        super().__init__()
        self.c = c2 // 2
        self.cv1 = Conv(c1, 2 * self.c, 1)
        self.cv2 = Conv((2 + n) * self.c, c2, 1)
        self.m = nn.ModuleList(RepViTBlockEMA(self.c) for _ in range(n))

    def forward(self, x):
        y = list(self.cv1(x).chunk(2, 1))
        y.extend(m(y[-1]) for m in self.m)
        return self.cv2(torch.cat(y, 1))


# ----------------------------------------------------------------------------- neck blocks
class SPPF(nn.Module):
    """Conv 1x1 -> three chained 5x5 max-pools -> concat -> Conv 1x1."""

    def __init__(self, c1, c2, k=5):
        super().__init__()
        c_ = c1 // 2
        self.cv1 = Conv(c1, c_, 1)
        self.cv2 = Conv(4 * c_, c2, 1)
        self.m = nn.MaxPool2d(k, 1, k // 2)

    def forward(self, x):
        y = [self.cv1(x)]
        y.extend(self.m(y[-1]) for _ in range(3))
        return self.cv2(torch.cat(y, 1))


class Concat(nn.Module):
    """Channel concatenation."""

    def forward(self, x):
        return torch.cat(x, 1)


class Add(nn.Module):
    """Element-wise sum of the inputs."""

    def forward(self, x):
        out = x[0]
        for t in x[1:]:
            out = out + t
        return out


class ZoomCat(nn.Module):
    """TFE (ASF-YOLO Zoom_cat): [large, medium, small] -> concat at medium's size."""

    def forward(self, x):
        l, m, s = x
        size = m.shape[2:]
        l = F.adaptive_max_pool2d(l, size) + F.adaptive_avg_pool2d(l, size)
        s = F.interpolate(s, size, mode="nearest")
        return torch.cat([l, m, s], 1)


class ScalSeq(nn.Module):
    """SSFF: 1x1 convs + nearest resize to P3, stack on depth, Conv3d + BN3d + LeakyReLU, max over depth."""

    def __init__(self, inc, channel):
        super().__init__()
        if inc[0] != channel:
            self.conv0 = Conv(inc[0], channel, 1)
        self.conv1 = Conv(inc[1], channel, 1)
        self.conv2 = Conv(inc[2], channel, 1)
        self.conv3d = nn.Conv3d(channel, channel, kernel_size=(1, 1, 1))
        self.bn = nn.BatchNorm3d(channel)
        self.act = nn.LeakyReLU(0.1)
        self.pool_3d = nn.MaxPool3d(kernel_size=(3, 1, 1))

    def forward(self, x):
        p3, p4, p5 = x
        if hasattr(self, "conv0"):
            p3 = self.conv0(p3)
        size = p3.shape[2:]
        p4 = F.interpolate(self.conv1(p4), size, mode="nearest")
        p5 = F.interpolate(self.conv2(p5), size, mode="nearest")
        stacked = torch.cat([p3.unsqueeze(2), p4.unsqueeze(2), p5.unsqueeze(2)], dim=2)  # (B, C, 3, H, W)
        y = self.act(self.bn(self.conv3d(stacked)))
        return self.pool_3d(y).squeeze(2)


# ----------------------------------------------------------------------------- head
class Scale(nn.Module):
    """Multiply by one learnable scalar."""

    def __init__(self, scale=1.0):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(scale, dtype=torch.float))

    def forward(self, x):
        return x * self.scale


class DFL(nn.Module):
    """Distribution focal loss integral: softmax over 16 bins, expected bin via a fixed 1x1 conv."""

    def __init__(self, c1=16):
        super().__init__()
        self.conv = nn.Conv2d(c1, 1, 1, bias=False).requires_grad_(False)
        self.conv.weight.data[:] = torch.arange(c1, dtype=torch.float).view(1, c1, 1, 1)
        self.c1 = c1

    def forward(self, x):
        b, _, a = x.shape
        return self.conv(x.view(b, 4, self.c1, a).transpose(2, 1).softmax(1)).view(b, 4, a)


class Proto(nn.Module):
    """YOLOv8 mask prototypes: Conv3x3 -> ConvTranspose2d x2 -> Conv3x3 -> Conv1x1."""

    def __init__(self, c1, c_=256, c2=32):
        super().__init__()
        self.cv1 = Conv(c1, c_, 3)
        self.upsample = nn.ConvTranspose2d(c_, c_, 2, 2, 0, bias=True)
        self.cv2 = Conv(c_, c_, 3)
        self.cv3 = Conv(c_, c2, 1)

    def forward(self, x):
        return self.cv3(self.cv2(self.upsample(self.cv1(x))))


def make_anchors(feats, strides, offset=0.5):
    """Anchor centres (N, 2) in grid units (row-major per level) and strides (N, 1)."""
    points, stride_list = [], []
    dtype, device = feats[0].dtype, feats[0].device
    for f, s in zip(feats, strides):
        h, w = f.shape[2:]
        sx = torch.arange(w, device=device, dtype=dtype) + offset
        sy = torch.arange(h, device=device, dtype=dtype) + offset
        yy, xx = torch.meshgrid(sy, sx, indexing="ij")
        points.append(torch.stack((xx, yy), -1).view(-1, 2))
        stride_list.append(torch.full((h * w, 1), float(s), dtype=dtype, device=device))
    return torch.cat(points), torch.cat(stride_list)


class SegmentLSCD(nn.Module):
    """LMSH head (Segment_LSCD): per-level Conv_GN 1x1 stem, shared Conv_GN 3x3 x2, shared cv2/cv3,
    per-level Scale, DFL decoding; mask-coefficient branch cv4 and Proto on P3."""

    def __init__(self, nc=80, nm=32, npr=256, hidc=256, ch=()):
        super().__init__()
        self.nc, self.nl, self.reg_max = nc, len(ch), 16
        self.no = nc + 4 * self.reg_max
        self.nm, self.npr = nm, npr
        self.register_buffer("stride", torch.zeros(self.nl), persistent=False)
        self.conv = nn.ModuleList(nn.Sequential(ConvGN(x, hidc, 1)) for x in ch)
        self.share_conv = nn.Sequential(ConvGN(hidc, hidc, 3), ConvGN(hidc, hidc, 3))
        self.cv2 = nn.Conv2d(hidc, 4 * self.reg_max, 1)
        self.cv3 = nn.Conv2d(hidc, nc, 1)
        self.scale = nn.ModuleList(Scale(1.0) for _ in ch)
        self.dfl = DFL(self.reg_max)
        self.proto = Proto(ch[0], npr, nm)
        c4 = max(ch[0] // 4, nm)
        self.cv4 = nn.ModuleList(
            nn.Sequential(ConvGN(x, c4, 1), ConvGN(c4, c4, 3), nn.Conv2d(c4, nm, 1)) for x in ch)

    def bias_init(self):
        """Ultralytics Detect.bias_init for a shared head: box bias 1, class bias ln(5/nc/(640/16)^2)."""
        self.cv2.bias.data[:] = 1.0
        self.cv3.bias.data[:] = math.log(5 / self.nc / (640 / 16) ** 2)

    def decode(self, maps):
        """Raw level maps -> (B, 4 + nc, N): boxes (cx, cy, w, h) in pixels and class sigmoids."""
        b = maps[0].shape[0]
        x = torch.cat([m.view(b, self.no, -1) for m in maps], 2)
        anchors, strides = make_anchors(maps, self.stride.tolist(), 0.5)
        anchors, strides = anchors.transpose(0, 1).unsqueeze(0), strides.transpose(0, 1)
        box, cls = x.split((4 * self.reg_max, self.nc), 1)
        lt, rb = self.dfl(box).chunk(2, 1)
        x1y1, x2y2 = anchors - lt, anchors + rb
        dbox = torch.cat(((x1y1 + x2y2) / 2, x2y2 - x1y1), 1) * strides
        return torch.cat((dbox, cls.sigmoid()), 1)

    def forward(self, x):
        p = self.proto(x[0])
        b = p.shape[0]
        mc = torch.cat([self.cv4[i](x[i]).view(b, self.nm, -1) for i in range(self.nl)], 2)
        maps = []
        for i in range(self.nl):
            f = self.share_conv(self.conv[i](x[i]))
            maps.append(torch.cat((self.scale[i](self.cv2(f)), self.cv3(f)), 1))
        if self.training:
            return maps, mc, p
        return torch.cat([self.decode(maps), mc], 1), (maps, mc, p)


# ----------------------------------------------------------------------------- network
class LMSFA(nn.Module):
    """LMSF-A, scale n (width 0.25, depth 0.33), layers routed as in Ultralytics' parse_model."""

    def __init__(self, nc=4):
        super().__init__()
        # (from, module); channel/repeat counts already scaled for 'n'.
        spec = [
            (-1, Conv(3, 16, 3, 2)),                    # 0  P1/2
            (-1, Conv(16, 32, 3, 2)),                   # 1  P2/4
            (-1, C2fPro(32, 32, 1)),                    # 2
            (-1, Conv(32, 64, 3, 2)),                   # 3  P3/8
            (-1, C2fPro(64, 64, 2)),                    # 4
            (-1, Conv(64, 128, 3, 2)),                  # 5  P4/16
            (-1, C2fPro(128, 128, 2)),                  # 6
            (-1, Conv(128, 256, 3, 2)),                 # 7  P5/32
            (-1, C2fPro(256, 256, 1)),                  # 8
            (-1, SPPF(256, 256, 5)),                    # 9
            (-1, Conv(256, 128, 1)),                    # 10
            (4, Conv(64, 128, 1)),                      # 11
            ([11, 6, 10], ZoomCat()),                   # 12
            (-1, C2fPro(384, 128, 1)),                  # 13
            (-1, Conv(128, 64, 1)),                     # 14
            (2, Conv(32, 64, 1)),                       # 15
            ([15, 4, 14], ZoomCat()),                   # 16
            (-1, C2fPro(192, 64, 1)),                   # 17 (P3/8)
            (-1, Conv(64, 64, 3, 2)),                   # 18
            ([-1, 14], Concat()),                       # 19
            (-1, C2fPro(128, 128, 1)),                  # 20 (P4/16)
            (-1, Conv(128, 128, 3, 2)),                 # 21
            ([-1, 10], Concat()),                       # 22
            (-1, C2fPro(256, 256, 1)),                  # 23 (P5/32)
            ([4, 6, 8], ScalSeq([64, 128, 256], 64)),   # 24
            ([17, 24], Add()),                          # 25
            ([25, 20, 23], SegmentLSCD(nc, 32, 64, 64, (64, 128, 256))),  # 26
        ]
        layers = []
        for i, (f, m) in enumerate(spec):
            m.f, m.i = f, i
            layers.append(m)
        self.model = nn.Sequential(*layers)
        self.save = sorted({(j % i) for i, (f, _) in enumerate(spec)
                            for j in ([f] if isinstance(f, int) else f) if j != -1})
        self.keep_all = False       # set True to keep every layer's output in self.outputs
        self.outputs = None
        self._initialize()

    def _initialize(self):
        """Ultralytics DetectionModel steps: strides, bias init, BN eps/momentum, in-place acts."""
        head = self.model[-1]
        head.stride.copy_(torch.tensor([8.0, 16.0, 32.0]))
        head.bias_init()
        for m in self.modules():
            if type(m) is nn.BatchNorm2d:
                m.eps, m.momentum = 1e-3, 0.03
            elif type(m) in (nn.SiLU, nn.LeakyReLU):
                m.inplace = True

    def forward(self, images):
        y = []
        x = images
        for m in self.model:
            if m.f != -1:
                x = y[m.f] if isinstance(m.f, int) else [x if j == -1 else y[j] for j in m.f]
            x = m(x)
            y.append(x if (self.keep_all or m.i in self.save) else None)
        self.outputs = y if self.keep_all else None
        return x


def build_model(num_classes: int = 4) -> nn.Module:
    """Training-form LMSF-A (scale n): all branches and BatchNorms, in train mode."""
    return LMSFA(num_classes).train()


def count_parameters(model: nn.Module) -> int:
    """All parameters, including the 16 fixed DFL weights (the README's convention)."""
    return sum(p.numel() for p in model.parameters())


def load_golden(model: nn.Module, npz_path) -> dict:
    """Load the golden state dict (exact PyTorch names; num_batches_tracked absent) into `model`.
    Returns the non-weight arrays (input, outputs, anchors) as a name -> np.ndarray dict."""
    data = np.load(npz_path)
    own = model.state_dict()
    state, extra = {}, {}
    for k in data.files:
        if k in own:
            state[k] = torch.from_numpy(np.array(data[k], dtype=np.float32)).reshape(own[k].shape)
        else:
            extra[k] = np.asarray(data[k])
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise KeyError(f"golden/state-dict mismatch: missing {missing}, unexpected {unexpected}")
    return extra


def golden_differences(npz_path) -> dict:
    """Eval-mode forward of the golden weights on the golden input (one thread) -> output name ->
    (max |ours − golden|, max |golden|) for each golden output this model reproduces."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = build_model(4)
        gold = load_golden(model, npz_path)
        model.eval()
        model.keep_all = True
        with torch.no_grad():
            decoded, (maps, mc, protos) = model(torch.from_numpy(gold["input"]))
    finally:
        torch.set_num_threads(threads)
    outs = model.outputs
    anchors, strides = make_anchors(maps, model.model[-1].stride.tolist(), 0.5)
    ours = {"out_p3": maps[0], "out_p4": maps[1], "out_p5": maps[2], "mask_coef": mc, "protos": protos,
            "decoded": decoded, "layer2": outs[2], "layer9": outs[9], "layer12": outs[12],
            "layer24": outs[24], "layer25": outs[25], "anchor_points": anchors, "stride_tensor": strides}
    differences = {}
    for name, value in ours.items():
        value = value.detach().numpy()
        if value.shape != gold[name].shape:
            raise ValueError(f"{name}: shape {value.shape}, golden {gold[name].shape}")
        differences[name] = (float(np.abs(value - gold[name]).max()), float(np.abs(gold[name]).max()))
    return differences
