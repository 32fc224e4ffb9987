import hashlib

import numpy as np
import pytest
from PIL import Image
from sklearn.base import clone
from sklearn.utils.estimator_checks import parametrize_with_checks

from conftest import write_png
from sigest.preprocessing import ImageReadError, PreprocessImage, TestPreprocessImage, find_near_duplicates, read_grayscale
from sigest.preprocessing import functional as F


def test_otsu_splits_two_levels():
    image = np.array([[20] * 10 + [230] * 30], dtype=np.uint8)
    t = F.otsu_threshold(image)
    assert 20 <= t < 230
    assert F.ink_mask(image, t).sum() == 10


def test_median_denoise_removes_salt_and_keeps_strokes(ink_page):
    noisy = ink_page.copy()
    noisy[5, 5] = 0  # an isolated speck
    out = F.median_denoise(noisy)
    assert out[5, 5] == 245 and out[28, 60] == 30
    np.testing.assert_array_equal(F.median_denoise(noisy, 1), noisy)


def test_remove_specks_keeps_large_components():
    mask = np.zeros((20, 20), bool)
    mask[2, 2] = True
    mask[10:15, 5:15] = True
    out = F.remove_specks(mask, 4)
    assert not out[2, 2] and out[10:15, 5:15].all()


@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (9, 1), (2, 3), (37, 53)])
def test_fast_steps_equal_their_reference_definitions(shape):
    """The fast median, histogram, speck removal and ink test give exactly the textbook results."""
    from scipy import ndimage

    rng = np.random.default_rng(sum(shape))
    for _ in range(5):
        image = rng.integers(0, 256, size=shape, dtype=np.uint8)
        np.testing.assert_array_equal(F.median_denoise(image), ndimage.median_filter(image, 3, mode="nearest"))
        np.testing.assert_array_equal(F.gray_histogram(image), np.bincount(image.ravel(), minlength=256))
        mask = rng.random(shape) < 0.3
        labels, n = ndimage.label(mask, structure=np.ones((3, 3), bool))
        sizes = np.bincount(labels.ravel(), minlength=n + 1)
        for min_size in (2, 4, 9):
            expected = mask & (sizes >= min_size)[labels]
            np.testing.assert_array_equal(F.remove_specks(mask, min_size), expected)
        if mask.any() and not mask.all():
            paper, ink = float(np.median(image[~mask])), float(image[mask].mean())
            box = F.ink_box(mask)  # the crop and the page's histogram say the same as the page
            for contrast in (paper - ink - 0.25, paper - ink + 0.25):
                assert F.has_ink(image, mask, contrast) == (paper - ink >= contrast)
                assert F.has_ink(image[box], mask[box], contrast, F.gray_histogram(image)) == (paper - ink >= contrast)


def test_crop_pad_resize_shapes(ink_page):
    mask = F.ink_mask(ink_page, 100)
    crop = F.crop_to_mask(ink_page, mask)
    assert crop.shape == (40, 100)
    padded = F.pad_to_aspect(crop, 2.0)
    assert padded.shape == (50, 100) and padded[0, 0] == 255
    assert F.resize(padded, (25, 50)).shape == (25, 50)


def test_principal_angle_and_rotate_undo_each_other(ink_page):
    tilted = F.rotate(ink_page, -12, fill=245)  # clockwise on the page: slopes down to the right
    angle = F.principal_angle(F.ink_mask(tilted, 100))
    assert angle == pytest.approx(12, abs=2.5)
    back = F.rotate(tilted, angle, fill=245)
    assert abs(F.principal_angle(F.ink_mask(back, 100))) < 1.5


def test_transform_shapes_and_range(small_signatures):
    images = small_signatures.images[:4]
    pre = PreprocessImage(size=(32, 48))
    single = pre.fit_transform(list(images))
    assert single.shape == (4, 1, 32, 48) and single.dtype == np.float32
    assert 0.0 <= single.min() and single.max() <= 1.0
    # ink bright on a dark background: the border is background
    assert single[:, 0, 0, :].max() < 0.05 and single.max() > 0.5
    pairs = pre.transform(np.array(images).reshape(2, 2, *images.shape[1:]))
    assert pairs.shape == (2, 2, 1, 32, 48)
    np.testing.assert_array_equal(pairs.reshape(4, 1, 32, 48), single)
    object_pairs = pre.transform([[images[0], images[1]], [images[2], images[3]]])
    np.testing.assert_array_equal(object_pairs, pairs)


def test_paths_and_n_jobs_give_the_same_output(tmp_path, small_signatures):
    paths = [str(write_png(tmp_path / f"{i}.png", im)) for i, im in enumerate(small_signatures.images[:20])]
    serial = PreprocessImage(size=(32, 48)).transform(paths)
    parallel = PreprocessImage(size=(32, 48), n_jobs=2).transform(paths)
    np.testing.assert_array_equal(serial, parallel)
    from_arrays = PreprocessImage(size=(32, 48)).transform(list(small_signatures.images[:20]))
    np.testing.assert_array_equal(serial, from_arrays)


def test_a_path_repeated_across_rows_is_preprocessed_once(tmp_path, small_signatures, monkeypatch):
    paths = [str(write_png(tmp_path / f"{i}.png", im)) for i, im in enumerate(small_signatures.images[:8])]
    rows = [[q, *paths[:3]] for q in paths[3:]]  # (questioned, 3 references): the references in every row
    cell_by_cell = np.stack([PreprocessImage(size=(32, 48)).transform(row) for row in rows])
    read = []
    measured = PreprocessImage.preprocess_measured
    monkeypatch.setattr(PreprocessImage, "preprocess_measured",
                        lambda self, item: read.append(item) or measured(self, item))
    for n_jobs in (None, 2):
        read.clear()
        out = PreprocessImage(size=(32, 48), n_jobs=n_jobs).transform(rows * 4)
        assert sorted(read) == sorted(paths)  # 20 rows of 4 cells, 8 distinct files
        np.testing.assert_array_equal(out, np.concatenate([cell_by_cell] * 4))
    monkeypatch.undo()
    images, ink = PreprocessImage(size=(32, 48)).transform_with_ink(rows * 4)
    pooled = PreprocessImage(size=(32, 48), measure_ink=True, pool_rows=True).transform(rows * 4)
    assert pooled["images"].shape == (8, 1, 32, 48) and pooled["rows"].shape == (20, 4)  # each file once
    np.testing.assert_array_equal(pooled["images"][pooled["rows"]], images)
    np.testing.assert_array_equal(pooled["ink"][pooled["rows"]], ink)
    assert set(PreprocessImage(size=(32, 48), pool_rows=True).transform(rows)) == {"images", "rows"}
    single = PreprocessImage(size=(32, 48), pool_rows=True).transform(paths)  # (n,) input: images as before
    np.testing.assert_array_equal(single, PreprocessImage(size=(32, 48)).transform(paths))


def test_near_duplicates_are_copies_of_a_scan_cropped_or_shifted_within_a_group(small_signatures):
    raw = list(small_signatures.images)
    first = np.flatnonzero(np.asarray(small_signatures.writer) == small_signatures.writer[0])
    writer = [raw[i] for i in first if small_signatures.genuine[i]]  # 5 genuine signatures of one writer
    cropped = writer[1][2:]  # the same scan two rows shorter, as BHSig260 Bengali holds
    pre = PreprocessImage(size=(150, 220))
    images = pre.transform(writer + [cropped, cropped])[:, 0]
    groups = ["w"] * 6 + ["other"]
    repeated = find_near_duplicates(images, groups)
    assert repeated.tolist() == [False] * 5 + [True, False]  # the copy alone, never the first nor another group's
    shifted = np.concatenate([images[:5], np.roll(images[2:3], (3, 3), axis=(1, 2))])
    assert find_near_duplicates(shifted, ["w"] * 6).tolist() == [False] * 5 + [True]
    assert not find_near_duplicates(shifted, ["w"] * 6, threshold=1.01).any()
    with pytest.raises(ValueError, match="groups"):
        find_near_duplicates(images, groups[:3])
    with pytest.raises(ValueError, match="shape"):
        find_near_duplicates(images[0], ["w"] * 150)


def test_steps_can_be_switched_off(ink_page):
    full = PreprocessImage(size=(30, 60), crop=False, keep_aspect=False, invert=False).transform([ink_page])
    # without crop, the output is the whole page resized: paper white at the corners
    assert full[0, 0, 0, 0] == pytest.approx(1.0)
    fixed = PreprocessImage(size=(30, 60), threshold=100).transform([ink_page])
    assert fixed.shape == (1, 1, 30, 60)
    with pytest.raises(ValueError, match="threshold"):
        PreprocessImage(threshold="mean").fit([ink_page])
    with pytest.raises(ValueError, match="size"):
        PreprocessImage(size=(4, 4)).fit([ink_page])


def _bar_page(height, width):
    page = np.full((200, 300), 245, np.uint8)
    page[20:20 + height, 30:30 + width] = 30
    return page


def test_canvas_keeps_relative_size_and_fitting_forgets_it():
    """On one canvas a signature twice as large comes out twice as large; fitted, both fill the image."""
    small, large = _bar_page(10, 60), _bar_page(20, 120)
    for cls in (PreprocessImage, TestPreprocessImage):
        on_canvas = cls(size=(60, 120), canvas=(60, 240), n_jobs=2).transform([small, large] * 8)
        extent = [(image[0] > 0.5).sum(axis=1).max() for image in on_canvas[:2]]
        assert extent == [30, 60]  # 60 and 120 source pixels, halved from a 240-wide canvas
        fitted = cls(size=(60, 120)).transform([small, large])
        assert [(image[0] > 0.5).sum(axis=1).max() for image in fitted] == [120, 120]
    # a signature larger than the canvas is shrunk to fit it whole
    too_large = PreprocessImage(size=(60, 120), canvas=(10, 30)).transform([large])
    assert (too_large[0, 0] > 0.5).sum(axis=1).max() == 120
    np.testing.assert_array_equal(F.center_on_canvas(np.zeros((2, 4), np.uint8), (4, 6))[1:3, 1:5], 0)
    with pytest.raises(ValueError, match="canvas"):
        PreprocessImage(canvas=(0, 10)).fit([small])


def test_binarize_drops_the_ink_gray_levels_and_keeps_the_shape():
    """Two pens of other darkness give one image once binarized, and two images otherwise."""
    dark, pale = _bar_page(20, 120), _bar_page(20, 120)
    pale[pale == 30] = 110
    for cls in (PreprocessImage, TestPreprocessImage):
        gray = cls(size=(30, 60)).transform([dark, pale])
        assert not np.allclose(gray[0], gray[1])
        binary = cls(size=(30, 60), binarize=True).transform([dark, pale])
        np.testing.assert_array_equal(binary[0], binary[1])
        np.testing.assert_array_equal(binary[0] > 0.5, gray[0] > 0.5)  # same strokes where they are
    np.testing.assert_array_equal(F.binarize(np.array([[True, False]])), [[0, 255]])


def test_normalize_ink_gives_one_image_for_a_lighter_pen_and_keeps_relative_gray_levels():
    """The same strokes in a pale and a dark ink come out alike; without it they differ by the pen."""
    dark = _bar_page(20, 120)
    dark[25:30, 40:140] = 60  # two ink levels: the relative levels must survive
    pale = dark.copy()
    pale[dark == 30], pale[dark == 60] = 140, 155  # darkness 225 and 195 become 115 and 100 (x 0.51)
    for cls in (PreprocessImage, TestPreprocessImage):
        as_scanned = cls(size=(30, 60)).transform([dark, pale])
        assert np.abs(as_scanned[0] - as_scanned[1]).max() > 0.4
        normalized = cls(size=(30, 60), normalize_ink=95).transform([dark, pale])
        np.testing.assert_allclose(normalized[0], normalized[1], atol=0.02)
        assert normalized[0].max() == 1.0 and len(np.unique(np.round(normalized[0][normalized[0] > 0.5], 1))) > 1
        np.testing.assert_array_equal(normalized[0] == 0, as_scanned[0] == 0)  # the paper stays paper
    scaled = F.normalize_ink(np.array([[255, 205, 155]], dtype=np.uint8), percentile=100)
    np.testing.assert_array_equal(scaled, [[255, 128, 0]])  # darkness 0, 50, 100 -> 0, 127.5, 255
    blank = np.full((4, 4), 250, dtype=np.uint8)
    assert F.normalize_ink(blank) is blank
    with pytest.raises(ValueError, match="normalize_ink"):
        PreprocessImage(normalize_ink=0).fit([dark])


def test_transform_with_ink_measures_the_ink_on_the_page():
    small, large = _bar_page(10, 60), _bar_page(20, 120)
    pre = PreprocessImage(size=(30, 60))
    images, ink = pre.transform_with_ink([[small, large], [large, small]])
    np.testing.assert_array_equal(images, pre.transform([[small, large], [large, small]]))
    assert ink.shape == (2, 2, 2)
    np.testing.assert_array_equal(ink[0, 0], ink[1, 1])
    # the fitted images are alike; on the page the large bar holds 4 times the ink (the 3x3 median
    # rounds 4 corners) and its strokes are twice as wide
    assert ink[0, 0, 0] == 10 * 60 - 4 and ink[0, 1, 0] == 20 * 120 - 4
    assert ink[0, 1, 1] == pytest.approx(2 * ink[0, 0, 1], rel=0.05)
    np.testing.assert_array_equal(TestPreprocessImage(size=(30, 60)).transform_with_ink([small])[1], ink[:1, 0])


def test_stroke_width_is_the_width_of_a_line_of_any_length():
    for width in (2, 3, 5):
        for length in (40, 200):
            mask = np.zeros((20, length + 20), bool)
            mask[5:5 + width, 10:10 + length] = True
            pixels, stroke = F.ink_measures(mask)
            assert pixels == width * length and stroke == pytest.approx(width, rel=0.1)
    assert F.ink_measures(np.zeros((4, 4), bool)) == (1, 1.0)


def test_rotation_robustness_margin(small_signatures):
    """Rotated inputs come out much closer to the upright output with TestPreprocessImage."""
    size = (64, 128)
    errors = {PreprocessImage: [], TestPreprocessImage: []}
    for image in small_signatures.images[::4][:10]:
        for angle in (-10, -6, 6, 10):
            rotated = F.rotate(image, angle, fill=int(np.median(image)))
            for cls in errors:
                pre = cls(size=size)
                upright, turned = pre.transform([image, rotated])
                errors[cls].append(np.abs(upright - turned).mean())
    plain, robust = np.mean(errors[PreprocessImage]), np.mean(errors[TestPreprocessImage])
    assert robust < 0.6 * plain, (plain, robust)


def test_bad_inputs_have_clear_errors(tmp_path, ink_page):
    with pytest.raises(FileNotFoundError, match="missing.png"):
        PreprocessImage().transform([str(tmp_path / "missing.png")])
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(ImageReadError, match="empty.png.*empty"):
        PreprocessImage().transform([str(empty)])
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    with pytest.raises(ImageReadError, match="notes.png.*not an image"):
        PreprocessImage().transform([str(text)])
    good = write_png(tmp_path / "good.png", ink_page).read_bytes()
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good[: len(good) // 2])
    with pytest.raises(ImageReadError, match="truncated.png"):
        PreprocessImage().transform([str(truncated)])
    blank = write_png(tmp_path / "blank.png", np.full((40, 40), 250, np.uint8))
    with pytest.raises(ImageReadError, match="blank.png.*no ink"):
        PreprocessImage().transform([str(blank)])
    with pytest.raises(ValueError, match="not image input"):
        PreprocessImage().transform(np.zeros((3, 4)))
    with pytest.raises(ValueError, match="wrap a single image in a list"):
        PreprocessImage().transform(ink_page)
    with pytest.raises(ValueError, match="single image"):
        PreprocessImage().transform("one.png")
    with pytest.raises(ValueError, match="empty"):
        PreprocessImage().transform([])


def test_decompression_bomb_guard_stays_on(tmp_path, monkeypatch):
    path = write_png(tmp_path / "bomb.png", np.full((100, 100), 255, np.uint8))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(ImageReadError, match="bomb.png.*decompression bomb"):
        read_grayscale(path)


def test_image_modes(tmp_path, ink_page):
    expected = read_grayscale(ink_page)
    # RGBA: a transparent background is paper, whatever colour its hidden pixels hold
    rgba = np.zeros((*ink_page.shape, 4), np.uint8)
    rgba[..., :3] = ink_page[..., None]
    rgba[..., 3] = np.where(ink_page < 128, 255, 0)
    rgba[ink_page >= 128, :3] = 0
    gray = read_grayscale(Image.fromarray(rgba, "RGBA"))
    assert gray[0, 0] == 255 and gray[28, 60] == 30
    palette = Image.fromarray(ink_page).convert("P")
    np.testing.assert_array_equal(read_grayscale(palette), expected)
    for palette_image in (Image.fromarray(ink_page, "L").convert("P", palette=Image.Palette.ADAPTIVE, colors=8),
                          Image.fromarray(ink_page, "P")):  # a colour palette, and the gray ramp
        if palette_image.getpalette() is None:
            palette_image.putpalette([v for level in range(256) for v in (level, level, level)])
        path = palette_image.save(tmp_path / "palette.tif") or tmp_path / "palette.tif"
        np.testing.assert_array_equal(read_grayscale(path), np.asarray(palette_image.convert("L")))
    sixteen = Image.fromarray(ink_page.astype(np.uint16) * 257)
    np.testing.assert_array_equal(read_grayscale(sixteen), expected)
    cmyk = Image.fromarray(ink_page).convert("CMYK")
    assert np.abs(read_grayscale(cmyk).astype(int) - expected).max() <= 1
    floats = ink_page / 255.0
    np.testing.assert_array_equal(read_grayscale(floats), expected)


def test_exif_orientation_is_applied(tmp_path, ink_page):
    image = Image.fromarray(ink_page)
    exif = image.getexif()
    exif[0x0112] = 6  # stored sideways: viewers rotate 90 degrees clockwise
    path = tmp_path / "rotated.jpg"
    image.save(path, exif=exif, quality=95)
    assert read_grayscale(path).shape == ink_page.shape[::-1]
    with Image.open(path) as opened:  # a caller's own image is turned on a copy, never in place
        assert read_grayscale(opened).shape == ink_page.shape[::-1] and opened.size == ink_page.shape[::-1]


def test_input_files_are_never_written(tmp_path, small_signatures):
    paths = [write_png(tmp_path / f"{i}.png", im) for i, im in enumerate(small_signatures.images[:3])]
    before = [(p.stat().st_mtime_ns, hashlib.sha1(p.read_bytes()).hexdigest()) for p in paths]
    TestPreprocessImage(size=(32, 48)).fit_transform([str(p) for p in paths])
    after = [(p.stat().st_mtime_ns, hashlib.sha1(p.read_bytes()).hexdigest()) for p in paths]
    assert before == after


def test_clone_and_params():
    pre = TestPreprocessImage(size=(32, 48), max_angle=5)
    twin = clone(pre)
    assert twin.get_params() == pre.get_params() and twin is not pre
    assert twin.set_params(denoise=0).denoise == 0


def _as_tabular(cls):
    """``cls`` claiming tabular input, so scikit-learn's generic checks run on it.

    The transformers honestly declare ``two_d_array=False`` (scikit-learn then runs almost no
    check); this view claims tabular input so every generic check runs, and those that only make
    sense for numeric tables are expected to fail, each with its reason.
    """

    class Tabular(cls):
        def __sklearn_tags__(self):
            tags = super().__sklearn_tags__()
            tags.input_tags.two_d_array = True
            return tags

    Tabular.__name__ = cls.__name__
    return Tabular


_TABLE = "feeds a numeric 2-D table (n_samples, n_features); image input is a sequence of images or (n, H, W)"
EXPECTED_FAILURES = {
    name: _TABLE
    for name in (
        "check_fit_score_takes_y", "check_estimators_overwrite_params", "check_dont_overwrite_parameters",
        "check_estimators_fit_returns_self", "check_readonly_memmap_input", "check_n_features_in_after_fitting",
        "check_positive_only_tag_during_fit", "check_estimators_dtypes", "check_pipeline_consistency",
        "check_estimators_nan_inf", "check_estimators_pickle", "check_f_contiguous_array_estimator",
        "check_transformer_general", "check_transformer_preserve_dtypes", "check_transformers_unfitted_stateless",
        "check_methods_sample_order_invariance", "check_methods_subset_invariance", "check_dict_unchanged",
        "check_fit_idempotent", "check_fit_check_is_fitted", "check_n_features_in", "check_fit2d_predict1d",
        "check_transformer_data_not_an_array",
    )
} | {
    "check_complex_data": "checks the wording of sklearn's own complex-number error for numeric tables",
    "check_dtype_object": "a 2-D object table of numbers is not image input; the error says so",
    "check_estimators_empty_data_messages": "expects sklearn's '0 feature(s)' wording; ours says the image input is empty",
    "check_estimator_sparse_array": "sparse matrices cannot hold images",
    "check_estimator_sparse_matrix": "sparse matrices cannot hold images",
    "check_fit2d_1sample": "expects sklearn's tabular wording for a one-sample table",
    "check_fit2d_1feature": "expects sklearn's tabular wording for a one-feature table",
}


@parametrize_with_checks(
    [_as_tabular(PreprocessImage)(), _as_tabular(TestPreprocessImage)()],
    expected_failed_checks=lambda est: EXPECTED_FAILURES,
)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def test_huge_images_are_reduced_on_reading_and_folders_are_named(tmp_path):
    from sigest.preprocessing import read_grayscale
    from sigest.preprocessing._io import MAX_SIDE

    wide = np.full((60, 9000), 250, np.uint8)
    wide[20:40, 100:8900] = 20
    image = read_grayscale(write_png(tmp_path / "wide.png", wide))
    assert max(image.shape) <= MAX_SIDE and image.shape == (20, 3000) and image.min() < 100
    with pytest.raises(ImageReadError, match="is a folder"):
        read_grayscale(tmp_path)


def test_a_bad_image_is_named_with_its_row(tmp_path, ink_page):
    good = str(write_png(tmp_path / "good.png", ink_page))
    with pytest.raises(FileNotFoundError, match=r"row 2: image file not found: .*missing\.png"):
        PreprocessImage(size=(32, 64)).transform([good, good, str(tmp_path / "missing.png")])
    with pytest.raises(ImageReadError, match=r"row 1, column 0: .*no ink"):
        PreprocessImage(size=(32, 64)).transform([[good, good], [np.full((40, 40), 250, np.uint8), good]])
    pages = [ink_page.copy() for _ in range(20)]  # distinct images: preprocessed by threads
    with pytest.raises(FileNotFoundError, match=r"row 7: image file not found: .*missing\.png"):
        PreprocessImage(size=(32, 64), n_jobs=2).transform([*pages[:7], str(tmp_path / "missing.png"), *pages[7:]])
