"""The latent explorer, driven headless through its ipywidgets (tiny untrained models)."""
import json
import shutil
from pathlib import Path

import cv2
import ipywidgets as w
import numpy as np
import pytest
import torch

from facelm.models.began import Generator, save_model
from facelm.apps.explore import explore, load_explorer
from facelm.apps.explorer import Explorer, component_sweep
from facelm.landmarks import draw_landmarks, read_pts, to_pixels
from facelm.models.lgen import LGen, save_lgen

ROOT = Path(__file__).resolve().parents[1]
SIZE, SCALE, RADIUS = 32, 12, 4  # the explorer's defaults at 32 px: 384 // 32, dots 384 / 96


@pytest.fixture(scope="module")
def models():
    return Generator(size=SIZE, width=4, z_dim=64, seed=1).eval(), LGen(seed=2).eval()


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    # anisotropic latents (distinct principal variances), some coordinates beyond [-1, 1]
    z = rng.uniform(-1, 1, (24, 64)) * np.linspace(1.4, 0.2, 64)
    z_mirror = rng.uniform(-1, 1, (3, 64))
    faces = rng.integers(0, 256, (24, SIZE, SIZE, 3), dtype=np.uint8)
    return z.astype(np.float32), z_mirror.astype(np.float32), faces


def walk(widget):
    yield widget
    for child in getattr(widget, "children", ()):
        yield from walk(child)


def find(root, cls, description):
    hits = [x for x in walk(root) if isinstance(x, cls) and x.description == description]
    assert len(hits) == 1, f"expected one {cls.__name__} {description!r}, found {len(hits)}"
    return hits[0]


def sliders(root):
    return [x for x in walk(root) if isinstance(x, w.FloatSlider) and x.description.startswith("PC")]


def shown(root) -> np.ndarray:
    """The main face image as the browser gets it: PNG bytes decoded to RGB."""
    image = next(x for x in walk(root) if isinstance(x, w.Image))
    bgr = cv2.imdecode(np.frombuffer(image.value, np.uint8), cv2.IMREAD_COLOR)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


@torch.no_grad()
def truth(models, z):
    """Our own G(z) (uint8 HWC) and L-Gen(z) (unit [49, 2]) for one z."""
    G, L = models
    x = G(torch.from_numpy(np.asarray(z, np.float32)[None]))[0]
    image = x.clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return image, L(torch.from_numpy(np.asarray(z, np.float32)[None]))[0].numpy()


def pca(z):
    """Independent PCA: mean, per-component std and unit directions (rows)."""
    mean = z.astype(np.float64).mean(0)
    _, s, vt = np.linalg.svd(z - mean, full_matrices=False)
    return mean, s / np.sqrt(len(z) - 1), vt


def uniform_z(seed):
    return (torch.rand(1, 64, generator=torch.Generator().manual_seed(seed)) * 2 - 1)[0].numpy()


@pytest.fixture
def explorer(models, data, tmp_path):
    z, z_mirror, faces = data
    ex = Explorer(*models, z_train=z, z_mirror=z_mirror, faces=faces, n_components=5,
                  device="cpu", out_dir=tmp_path / "unused")
    return ex, ex.widget()


def test_principal_directions_match_an_independent_pca(explorer, data):
    ex, _ = explorer
    mean, sigma, vt = pca(data[0])
    d = ex.directions
    np.testing.assert_allclose(d.mean, mean, atol=1e-5)
    np.testing.assert_allclose(d.sigma, sigma[:5], rtol=1e-4)
    np.testing.assert_allclose(np.abs((d.vectors @ vt[:5].T).diagonal()), 1.0, atol=1e-4)
    np.testing.assert_allclose(d.vectors @ d.vectors.T, np.eye(5), atol=1e-5)
    assert "principal components of 24" in d.source


def test_sliders_drive_the_displayed_face_and_landmarks(explorer, models, data):
    ex, root = explorer
    comps = sliders(root)
    assert len(comps) == 5 and not any(s.continuous_update for s in comps)
    mean, sigma, vt = pca(data[0])
    vt = vt[:5] * np.sign((ex.directions.vectors * vt[:5]).sum(1))[:, None]  # SVD signs are arbitrary

    image0, lm0 = truth(models, mean)
    np.testing.assert_array_equal(shown(root), draw_landmarks(image0, lm0, scale=SCALE, radius=RADIUS))

    comps[0].value, comps[2].value = 1.5, -2.0
    z = mean + 1.5 * sigma[0] * vt[0] - 2.0 * sigma[2] * vt[2]
    z = np.clip(z, np.minimum(-1, mean), np.maximum(1, mean))
    np.testing.assert_allclose(ex.current_z(), z, atol=1e-5)

    image, lm = truth(models, ex.current_z())
    assert not np.array_equal(image, image0) and not np.allclose(lm, lm0, atol=1e-6)
    np.testing.assert_array_equal(shown(root), draw_landmarks(image, lm, scale=SCALE, radius=RADIUS))
    got_image, got_lm = ex.render()
    np.testing.assert_array_equal(got_image, image)
    np.testing.assert_allclose(got_lm, lm, atol=1e-6)

    # toggles: points off = the plain upscaled face; index numbers add text on top
    with_points = shown(root)
    find(root, w.Checkbox, "landmarks").value = False
    np.testing.assert_array_equal(shown(root), image.repeat(SCALE, 0).repeat(SCALE, 1))
    find(root, w.Checkbox, "index numbers").value = True
    numbered = shown(root)
    assert (numbered != image.repeat(SCALE, 0).repeat(SCALE, 1)).any()
    find(root, w.Checkbox, "landmarks").value = True
    assert (shown(root) != with_points).any() and (shown(root) != numbered).any()

    find(root, w.Button, "reset sliders").click()
    assert all(s.value == 0 for s in comps)
    np.testing.assert_array_equal(ex.current_z(), ex.directions.mean)


def test_seed_box_sets_a_uniform_random_base(explorer, models):
    ex, root = explorer
    find(root, w.IntText, "seed").value = 7
    np.testing.assert_array_equal(ex.current_z(), uniform_z(7))
    image, lm = truth(models, uniform_z(7))
    np.testing.assert_array_equal(shown(root), draw_landmarks(image, lm, scale=SCALE, radius=RADIUS))

    # slider offsets stay applied on top of a new seed, clipped to the prior's box
    sliders(root)[1].value = 3.0
    d = ex.directions
    expected = np.clip(uniform_z(7) + 3.0 * d.sigma[1] * d.vectors[1], -1, 1)
    np.testing.assert_allclose(ex.current_z(), expected, atol=1e-6)
    assert np.abs(ex.current_z()).max() <= 1.0
    find(root, w.IntText, "seed").value = 8
    np.testing.assert_allclose(ex.current_z(), np.clip(uniform_z(8) + 3.0 * d.sigma[1] * d.vectors[1], -1, 1),
                               atol=1e-6)
    find(root, w.Button, "reset sliders").click()
    np.testing.assert_array_equal(ex.current_z(), uniform_z(8))
    find(root, w.Button, "mean z").click()
    np.testing.assert_array_equal(ex.current_z(), ex.directions.mean)

    # the methods, called from code, move the widgets too
    ex.set_seed(11)
    assert find(root, w.IntText, "seed").value == 11
    image, lm = truth(models, uniform_z(11))
    np.testing.assert_array_equal(shown(root), draw_landmarks(image, lm, scale=SCALE, radius=RADIUS))
    ex.set_interpolation(4, 6, 0.5)
    assert (find(root, w.BoundedIntText, "face a").value, find(root, w.BoundedIntText, "face b").value,
            find(root, w.FloatSlider, "t").value) == (4, 6, 0.5)


def test_interpolation_between_faces_and_a_face_and_its_mirror(explorer, models, data):
    ex, root = explorer
    z, z_mirror, faces = data
    assert (np.abs(z[5]) > 1).any()  # the ends must survive un-clipped
    t = find(root, w.FloatSlider, "t")
    assert not t.continuous_update
    find(root, w.BoundedIntText, "face a").value = 2
    find(root, w.BoundedIntText, "face b").value = 5
    t.value = 0.0
    np.testing.assert_array_equal(ex.current_z(), z[2])
    t.value = 1.0
    np.testing.assert_array_equal(ex.current_z(), z[5])
    image, lm = truth(models, z[5])
    np.testing.assert_array_equal(shown(root), draw_landmarks(image, lm, scale=SCALE, radius=RADIUS))
    t.value = 0.25
    np.testing.assert_allclose(ex.current_z(), 0.75 * z[2] + 0.25 * z[5], atol=1e-6)

    thumbs = [x for x in walk(root) if isinstance(x, w.Image)][1:]
    decode = lambda im: cv2.cvtColor(cv2.imdecode(np.frombuffer(im.value, np.uint8), 1), cv2.COLOR_BGR2RGB)
    k = 96 // SIZE
    np.testing.assert_array_equal(decode(thumbs[1]), faces[5].repeat(k, 0).repeat(k, 1))

    find(root, w.Checkbox, "b = mirror image of a").value = True
    t.value = 1.0
    np.testing.assert_array_equal(ex.current_z(), z_mirror[2])
    t.value = 0.0
    np.testing.assert_array_equal(ex.current_z(), z[2])
    np.testing.assert_array_equal(decode(thumbs[1]), faces[2][:, ::-1].repeat(k, 0).repeat(k, 1))

    # face 3 has no inverted mirror image: the UI reports it and keeps the last z
    find(root, w.BoundedIntText, "face a").value = 3
    np.testing.assert_array_equal(ex.current_z(), z[2])
    assert "mirror" in next(x for x in walk(root) if isinstance(x, w.HTML) and "color:#b00" in x.value).value
    with pytest.raises(ValueError, match="t must be"):
        ex.set_interpolation(0, 1, 1.5)


def test_save_button_writes_png_and_pts(explorer, models, tmp_path):
    ex, root = explorer
    find(root, w.Text, "save to").value = str(tmp_path / "saved")
    sliders(root)[0].value = -1.0
    find(root, w.IntText, "seed").value = 3
    button = find(root, w.Button, "save PNG + .pts")
    button.click()
    png, pts = tmp_path / "saved" / "face_000.png", tmp_path / "saved" / "face_000.pts"
    assert png.is_file() and pts.is_file()
    image, lm = truth(models, ex.current_z())
    saved = cv2.cvtColor(cv2.imread(str(png)), cv2.COLOR_BGR2RGB)
    assert saved.shape == (SIZE, SIZE, 3)
    np.testing.assert_array_equal(saved, image)
    points = read_pts(pts)
    assert points.shape == (49, 2)
    np.testing.assert_allclose(points, to_pixels(lm, SIZE, SIZE), atol=1e-3)
    np.testing.assert_array_equal(np.load(tmp_path / "saved" / "face_000_z.npy"), ex.current_z())
    button.click()  # never overwrites
    assert (tmp_path / "saved" / "face_001.png").is_file()
    assert "face_001.pts" in next(x for x in walk(root) if isinstance(x, w.HTML) and "saved" in x.value).value
    assert not (tmp_path / "unused").exists()


def test_fallback_without_latents_uses_seeded_random_directions(models):
    ex = Explorer(*models, n_components=4, seed=5, device="cpu")
    root = ex.widget()
    d = ex.directions
    assert "random orthonormal" in d.source and "seed 5" in d.source
    np.testing.assert_allclose(d.vectors @ d.vectors.T, np.eye(4), atol=1e-6)
    np.testing.assert_allclose(d.sigma, 1 / np.sqrt(3))
    np.testing.assert_array_equal(d.mean, 0)
    np.testing.assert_array_equal(Explorer(*models, n_components=4, seed=5).directions.vectors, d.vectors)
    assert not np.allclose(Explorer(*models, n_components=4, seed=6).directions.vectors, d.vectors)
    assert "random orthonormal" in next(x for x in walk(root) if isinstance(x, w.HTML) and "sliders:" in x.value).value

    comps = sliders(root)
    assert len(comps) == 4
    comps[3].value = 2.0
    np.testing.assert_allclose(ex.current_z(), np.clip(2.0 / np.sqrt(3) * d.vectors[3], -1, 1), atol=1e-6)
    image, lm = truth(models, ex.current_z())
    np.testing.assert_array_equal(shown(root), draw_landmarks(image, lm, scale=SCALE, radius=RADIUS))
    assert not any(isinstance(x, w.FloatSlider) and x.description == "t" for x in walk(root))
    with pytest.raises(ValueError, match="inverted latents"):
        ex.set_interpolation(0, 1, 0.5)


def test_component_sweep_rows_and_bad_input(explorer, models):
    ex, _ = explorer
    images, lm = component_sweep(ex, components=(0, 1), sigmas=(-2.0, 0.0, 2.0))
    assert images.shape == (6, SIZE, SIZE, 3) and lm.shape == (6, 49, 2)
    centre, centre_lm = truth(models, ex.directions.mean)
    np.testing.assert_array_equal(images[1], centre)
    np.testing.assert_array_equal(images[4], centre)
    assert not np.array_equal(images[0], images[2])
    with pytest.raises(ValueError, match="z_train"):
        Explorer(*models, z_train=np.zeros((4, 10), np.float32))
    with pytest.raises(ValueError, match="seed"):
        ex.set_seed(-1)


def _tiny_project(folder: Path, models, data) -> Path:
    z, z_mirror, faces = data
    for name in ("dvc.yaml", "params.yaml"):
        (folder / name).write_text("{}\n")
    save_model(folder / "data/began/generator.safetensors", models[0])
    save_lgen(folder / "data/lgen/lgen.safetensors", models[1])
    (folder / "data/latents").mkdir(parents=True)
    (folder / "data/faces").mkdir(parents=True)
    np.save(folder / "data/latents/z_train.npy", z)
    np.save(folder / "data/latents/z_mirror.npy", z_mirror)
    np.save(folder / "data/faces/train_images.npy", faces)
    return folder


def test_explore_loads_the_pipeline_files(models, data, tmp_path):
    root = _tiny_project(tmp_path, models, data)
    ui = explore(root=root, device="cpu")
    assert isinstance(ui, w.Widget)
    ex = ui.explorer
    np.testing.assert_array_equal(ex.z_train, data[0])
    np.testing.assert_array_equal(ex.z_mirror, data[1])
    assert isinstance(ex.faces, np.memmap)
    image, lm = truth(models, ex.current_z())
    np.testing.assert_array_equal(shown(ui), draw_landmarks(image, lm, scale=SCALE, radius=RADIUS))

    # explicit paths (the notebook's call with arguments), no latents -> fallback directions
    ui2 = explore(generator=root / "data/began/generator.safetensors",
                  lgen=root / "data/lgen/lgen.safetensors", latents=False, mirror_latents=False,
                  faces=False, device="cpu")
    assert "random orthonormal" in ui2.explorer.directions.source
    with pytest.raises(FileNotFoundError, match="dvc repro"):
        load_explorer(root=tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="latents"):
        load_explorer(root=root, latents=tmp_path / "missing.npy")


def test_explore_notebook_runs_on_a_tiny_project(models, data, tmp_path):
    import nbclient
    import nbformat

    root = _tiny_project(tmp_path, models, data)
    (root / "notebooks").mkdir()
    shutil.copy(ROOT / "notebooks" / "explore.ipynb", root / "notebooks")
    nb = nbformat.read(root / "notebooks" / "explore.ipynb", as_version=4)
    nbclient.NotebookClient(nb, timeout=120, kernel_name="python3",
                            resources={"metadata": {"path": str(root / "notebooks")}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    kinds = {k for o in outputs for k in o.get("data", {})}
    assert "application/vnd.jupyter.widget-view+json" in kinds and "image/png" in kinds
    assert "principal components of 24" in json.dumps([o.get("text", "") for o in outputs])


def test_mirror_latents_follow_the_faces_stage_03_chose(models, data):
    """Stage 03 mirrors the most turned faces: z_mirror[j] belongs to training face index[j]."""
    z, z_mirror, faces = data
    ex = Explorer(*models, z_train=z, z_mirror=z_mirror, faces=faces, device="cpu", mirror_index=[7, 2, 11])
    a, b = ex.endpoints(11, 0, mirror=True)
    np.testing.assert_array_equal(a, z[11])
    np.testing.assert_array_equal(b, z_mirror[2])
    with pytest.raises(ValueError, match="inverted mirror image"):
        ex.endpoints(0, 1, mirror=True)
    with pytest.raises(ValueError, match="mirror_index names 2 faces for 3"):
        Explorer(*models, z_train=z, z_mirror=z_mirror, device="cpu", mirror_index=[1, 2])


# ------------------------------------------------ a label generator on G's features
def test_a_features_label_generator_drives_the_explorer_and_shows_its_uncertainty(models, data, tmp_path):
    from facelm.models.feature_lgen import FeatureLGen, save_feature_lgen

    G = models[0]
    F = FeatureLGen(G, members=3, grid=8, hidden=4, seed=3).eval()
    root = _tiny_project(tmp_path, models, data)
    save_feature_lgen(root / "data/lgen/features.safetensors", F)
    (root / "params.yaml").write_text("lgen:\n  kind: features\n")
    ui = explore(root=root, device="cpu")
    ex = ui.explorer
    assert ex.lgen.kind == "features"
    find(ui, w.IntText, "seed").value = 5
    image, lm = truth((G, F), ex.current_z())
    np.testing.assert_array_equal(shown(ui), draw_landmarks(image, lm, scale=SCALE, radius=RADIUS))
    with torch.no_grad():
        u = float(F.uncertainty(torch.from_numpy(ex.current_z()[None]))[0])
    assert ex.label_uncertainty() == pytest.approx(u, rel=1e-5) and u > 0
    status = next(x for x in walk(ui) if isinstance(x, w.HTML) and "max |z|" in x.value).value
    assert f"label uncertainty {u:.3f}" in status
    # the z kind (params say nothing): the L-Gen file, and no uncertainty shown
    (root / "params.yaml").write_text("{}\n")
    ex_z = load_explorer(root=root, device="cpu")
    assert ex_z.lgen.kind == "z" and ex_z.label_uncertainty() is None
    other = FeatureLGen(Generator(size=SIZE, width=4, z_dim=64, seed=9), members=2, grid=8, hidden=4)
    with pytest.raises(ValueError, match="another generator"):
        Explorer(G, other, device="cpu")
