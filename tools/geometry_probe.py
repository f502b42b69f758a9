"""Does a landmark term keep geometry in the inversion? Measured on TRAINING faces.

loss = L1(G(z), x) + w * mean |J(G(z)) - J(x)|, J = the stage-00 judge (unit coordinates).
E learns from training faces 0-4999 (params.yaml's encoder settings), faces 5000-5499 are
inverted with params.yaml's Adam steps (plain torch Adam on the batch: a probe, no early stop).
For each w it prints the L1, the judge's NME of G(z_r) against the truth (not an outside check
once w > 0) and dlib's NME and found rate on G(z_r) (the outside check):

    python tools/geometry_probe.py 0,0.3,1,3,10

Run it in a project where stages 00-02 have run.
"""
import sys, time
import numpy as np, torch
from facelm.config import load_params, replace
from facelm.data.faceset import load_split
from facelm.inversion import train_encoder
from facelm.inversion.encoder import encode
from facelm.landmarks import nme
from facelm.models.began import load_generator
from facelm.models.detector import load_detector, predict_landmarks
from facelm.models.dlib_landmarks import annotate
from facelm.paths import project_root
from facelm.tensors import to_uint8, to_tensor
root = project_root()
params = load_params(f"{root}/params.yaml"); cfg = params.inversion
G = load_generator(f"{root}/data/began/generator.safetensors", device="cpu").eval()
J = load_detector(f"{root}/data/detector/detector.safetensors", device="cpu").eval()
for p_ in list(G.parameters()) + list(J.parameters()): p_.requires_grad_(False)
train = load_split(f"{root}/data/faces", "train")
fit, faces, truth = np.asarray(train.images[:5000]), np.asarray(train.images[5000:5500]), np.asarray(train.landmarks[5000:5500])
t0 = time.perf_counter(); E = train_encoder(G, cfg, seed=params.seed, images=fit, progress=False); print(f"encoder {time.perf_counter()-t0:.1f} s", flush=True)
x = to_tensor(faces, "cpu")
with torch.no_grad():
    z0 = encode(E, x).clamp(-1, 1)
    jx = J(x).reshape(len(x), -1)  # judge on the data faces
print("J output", tuple(J(x[:2]).shape), "judge on data vs truth", nme(predict_landmarks(J, faces), truth).mean().round(4))
for w in [float(a) for a in sys.argv[1].split(",")]:  # weights to try
    t0 = time.perf_counter()
    z = z0.clone().requires_grad_(True); opt = torch.optim.Adam([z], lr=cfg.lr)
    for _ in range(cfg.steps):
        xh = G(z); l1 = (xh - x).abs().mean(dim=(1, 2, 3))
        loss = l1.sum() + (w * (J(xh).reshape(len(x), -1) - jx).abs().mean(dim=1).sum() if w else 0)
        opt.zero_grad(); loss.backward(); opt.step()
        with torch.no_grad(): z.clamp_(-1, 1)
    with torch.no_grad():
        img = to_uint8(G(z)); L1 = ((G(z).clamp(-1, 1) - x).abs().mean() / 2).item()
    jn = nme(predict_landmarks(J, img), truth).mean()
    pts, found = annotate(img, "detect", size=params.evaluation.dlib_size, progress=False)
    dn = nme(pts[found], truth[found]).mean()
    print(f"w {w:5.2f}: L1 {L1:.4f}  judge {jn:.4f}  dlib NME {dn:.4f} (found {found.mean():.3f})  {time.perf_counter()-t0:.1f} s", flush=True)
pts, found = annotate(faces, "detect", size=params.evaluation.dlib_size, progress=False)
print(f"dlib on the data faces: NME {nme(pts[found], truth[found]).mean():.4f} found {found.mean():.3f}")
