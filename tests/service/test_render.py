"""POST /v1/render and the map it draws: a PNG of one detection, its cutout and its UMAP place."""

import io
import subprocess
import sys

import numpy as np
import pytest
from matplotlib.figure import Figure
from matplotlib.image import imread

from service import render
from service.config import Settings
from service.runtime import ModelRuntime
from service.web.app import create_app

PROBLEM = "application/problem+json"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def cutout_of(tiny_data, vis_class: int) -> list[list[float]]:
    return tiny_data.im_sum[tiny_data.vis_class == vis_class][0, :, 34:66].tolist()


def pixels(reply) -> np.ndarray:
    return imread(io.BytesIO(reply.data), format="png")


def test_render_is_a_png_of_the_documented_size(client, tiny_data):
    reply = client.post("/v1/render", json={"detectid": 7, "cutout": cutout_of(tiny_data, 5)})
    assert reply.status_code == 200, reply.get_data(as_text=True)
    assert reply.mimetype == "image/png"
    assert reply.data.startswith(PNG_MAGIC)
    assert pixels(reply).shape == (render.HEIGHT, render.WIDTH, 4)


def panel(image: np.ndarray, box: tuple[int, int, int, int], inset: int = 3) -> np.ndarray:
    """The pixels inside a panel's box (render's fixed places), less ``inset`` at each edge."""
    left, bottom, width, height = box
    top = render.HEIGHT - bottom - height
    return image[top + inset : top + height - inset, left + inset : left + width - inset]


def first_title_line(image: np.ndarray) -> tuple[int, int]:
    """Left and right ink columns of the cutout panel title's first line (the detectid): the
    first run of rows with dark pixels above the cutout panel, left of the map."""
    left, bottom, width, height = render.CUTOUT_BOX
    above = image[: render.HEIGHT - bottom - height, : left + width + 40, :3].min(axis=2) < 0.5
    inked = above.any(axis=1)
    assert inked.any(), "no text above the cutout panel"
    start = int(np.argmax(inked))
    end = start + int(np.argmin(inked[start:]))  # the first blank row after it
    columns = np.flatnonzero(above[start:end].any(axis=0))
    return int(columns[0]), int(columns[-1])


@pytest.mark.parametrize("detectid", ["$\\frac{$", "$x$", "50%_{a}^b", "\\\\"])
def test_ids_with_tex_characters_render_as_text(client, tiny_data, detectid):
    from matplotlib.font_manager import FontProperties
    from matplotlib.textpath import TextToPath

    reply = client.post(
        "/v1/render", json={"detectid": detectid, "cutout": cutout_of(tiny_data, 5)}
    )
    assert reply.status_code == 200 and reply.data.startswith(PNG_MAGIC)
    image = pixels(reply)
    assert image.shape == (render.HEIGHT, render.WIDTH, 4)
    # The title's first line is drawn, as wide as its characters laid out as plain text (TeX
    # would draw "$x$" as an italic x, a "$" narrower on each side).
    left, right = first_title_line(image)
    width, _, _ = TextToPath().get_text_width_height_descent(
        f"detectid {detectid}", FontProperties(size=11), ismath=False
    )
    assert left < render.CUTOUT_BOX[0] + 10
    assert right - left + 1 == pytest.approx(width * render.DPI / 72, abs=6)


def test_100_column_products_and_wave_are_accepted(client, tiny_data):
    product = tiny_data.im_sum[0].tolist()
    reply = client.post("/v1/render", json={"cutout": product, "wave": 5200.0})
    assert reply.status_code == 200 and reply.data.startswith(PNG_MAGIC)


def rendered_titles(client, monkeypatch, body: dict) -> str:
    """The cutout panel's title of the PNG that /v1/render draws for ``body``."""
    titles = []
    draw = render.draw_cutout

    def spy(axes, colorbar_axes, model_input, result):
        draw(axes, colorbar_axes, model_input, result)
        titles.append(axes.get_title(loc="left"))

    monkeypatch.setattr(render, "draw_cutout", spy)
    reply = client.post("/v1/render", json=body)
    assert reply.status_code == 200 and reply.data.startswith(PNG_MAGIC)
    (title,) = titles
    return title


def test_the_title_shows_the_novelty_and_says_novel(client, tiny_data, monkeypatch, novel_cutout):
    ordinary = cutout_of(tiny_data, 5)
    scored = client.post("/v1/score", json={"cutout": ordinary}).get_json()
    title = rendered_titles(client, monkeypatch, {"detectid": 3, "cutout": ordinary})
    assert title.splitlines()[2] == f"{render.novelty_phrase(scored)}; flags: none"
    assert title.splitlines()[2].startswith("novelty 0.") and "(novel)" not in title
    title = rendered_titles(client, monkeypatch, {"detectid": 4, "cutout": novel_cutout.tolist()})
    assert "novelty 1.00 (novel); flags: novel" in title


@pytest.mark.parametrize(
    ("novelty", "flags", "phrase"),
    [
        (0.97, ["novel"], "novelty 0.97 (novel)"),
        (0.29, [], "novelty 0.29"),  # float32 0.29 is 0.28999999: not shown as 0.28
        (0.996, [], "novelty 0.99"),  # rounded down: below a threshold of 1, never 1.00
        (1.0, ["mostly_masked", "novel"], "novelty 1.00 (novel)"),
        (0.0, [], "novelty 0.00"),
    ],
)
def test_novelty_phrase(novelty, flags, phrase):
    value = float(np.float32(novelty))
    assert render.novelty_phrase({"novelty": value, "flags": flags}) == phrase


def test_real_and_fake_cutouts_render_differently(client, tiny_data):
    def drawn(detectid: int, vis_class: int) -> np.ndarray:
        body = {"detectid": detectid, "cutout": cutout_of(tiny_data, vis_class)}
        return pixels(client.post("/v1/render", json=body))

    real, real_again = drawn(1, 5), drawn(2, 5)
    assert real.shape == (render.HEIGHT, render.WIDTH, 4)
    # The cutout panel shows the cutout alone: the same cutout under another id (a title that
    # differs) draws the same panel ...
    assert np.abs(real - real_again).max() > 0.1
    shown = panel(real, render.CUTOUT_BOX)
    np.testing.assert_array_equal(shown, panel(real_again, render.CUTOUT_BOX))
    # ... and another cutout's panel differs over most of its pixels, not in the title alone:
    # a fake with nothing masked (its values) and a bad amplifier (its masked pixels too).
    for fake_class in (0, -2):
        fake = drawn(1, fake_class)
        assert fake.shape == real.shape
        apart = np.abs(shown - panel(fake, render.CUTOUT_BOX)).max(axis=2)
        assert (apart > 0.1).mean() > 0.5, fake_class


@pytest.mark.parametrize(
    ("kwargs", "status", "pointer"),
    [
        ({"json": {"cutout": [[1.0] * 32] * 8}}, 422, "/cutout"),
        ({"json": {"cutout": [[1.0] * 32] * 9, "wave": -1.0}}, 422, "/wave"),
        ({"json": {"cutout": [[1.0] * 32] * 9, "size": 2}}, 422, "/size"),
        ({"data": b"{}", "content_type": "text/plain"}, 415, "/"),
        ({"data": b"{", "content_type": "application/json"}, 400, None),
    ],
)
def test_bad_requests_are_problem_json(client, kwargs, status, pointer):
    reply = client.post("/v1/render", **kwargs)
    assert reply.status_code == status
    assert reply.mimetype == PROBLEM
    problem = reply.get_json()
    assert problem["status"] == status and problem["instance"] == "/v1/render"
    if pointer:
        assert problem["pointer"] == pointer


def test_not_ready_worker_answers_503(tiny_model_dir):
    runtime = ModelRuntime(Settings(model_dir=tiny_model_dir))  # never started: still loading
    client = create_app(runtime.settings, runtime=runtime).test_client()
    reply = client.post("/v1/render", json={"cutout": [[0.0] * 32] * 9})
    assert reply.status_code == 503 and reply.mimetype == PROBLEM


def test_decision_grid_has_the_svm_sign_everywhere_sampled(tiny_bundle):
    map_ = render.MapBackground.compute(tiny_bundle)
    assert map_.decision.shape == (render.GRID, render.GRID)
    assert map_.xs[0] < map_.coords[:, 0].min() and map_.xs[-1] > map_.coords[:, 0].max()
    assert map_.ys[0] < map_.coords[:, 1].min() and map_.ys[-1] > map_.coords[:, 1].max()
    rows, columns = np.meshgrid(np.arange(0, render.GRID, 13), np.arange(0, render.GRID, 17))
    points = np.column_stack([map_.xs[columns.ravel()], map_.ys[rows.ravel()]])
    expected = tiny_bundle.svm.decision_function(points)  # scikit-learn's own, not the fast one
    grid = map_.decision[rows.ravel(), columns.ravel()]
    np.testing.assert_allclose(grid, expected, rtol=1e-9, atol=1e-9)


def test_decision_grid_is_row_major_in_y():
    xs, ys = np.linspace(-1.0, 1.0, 5), np.linspace(10.0, 20.0, 3)
    grid = render.decision_grid(lambda p: p[:, 0] + 100 * p[:, 1], xs, ys)
    assert grid.shape == (3, 5)
    assert grid[2, 0] == pytest.approx(-1.0 + 2000.0)


def test_background_is_computed_once_per_bundle(tiny_bundle, monkeypatch):
    first = render.background(tiny_bundle)
    monkeypatch.setattr(render.MapBackground, "compute", lambda bundle: pytest.fail("recomputed"))
    assert render.background(tiny_bundle) is first


def synthetic_map(decision: np.ndarray) -> render.MapBackground:
    xs, ys = np.linspace(-1.0, 1.0, decision.shape[1]), np.linspace(-1.0, 1.0, decision.shape[0])
    return render.MapBackground(np.zeros((1, 2)), np.array([5]), xs, ys, decision)


def test_boundary_is_drawn_only_when_the_map_has_two_sides():
    split = synthetic_map(np.tile(np.linspace(-1.0, 1.0, 20), (20, 1)))
    axes = Figure().subplots()
    handles, phrase = render.draw_svm(axes, split)
    assert [h.get_label() for h in handles][-1] == "SVM boundary" and "boundary" in phrase
    assert len(axes.collections) == 2  # the shaded sides and the zero contour

    uniform = synthetic_map(np.full((20, 20), 0.5))
    axes = Figure().subplots()
    handles, phrase = render.draw_svm(axes, uniform)
    assert phrase == "the SVM says real everywhere" and len(axes.collections) == 1


def test_scoring_workers_do_not_import_matplotlib():
    code = (
        "import sys, service.web.app, service.render; "
        "sys.exit('matplotlib' in sys.modules or 'matplotlib.pyplot' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
