import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.model_selection import GroupKFold

from conftest import write_png, write_scan
from sigest.datasets import (
    load_signatures,
    make_pairs,
    make_reference_sets,
    make_signatures,
    make_triplets,
    random_images,
    save_signatures,
    split_writers,
    writer_groups,
)


@pytest.fixture
def page():
    return np.full((20, 30), 200, dtype=np.uint8)


def test_cedar_layout(tmp_path, page):
    for w in (1, 2):
        for i in (1, 2):
            write_scan(tmp_path / "full_org" / f"original_{w}_{i}.png", page)
        write_scan(tmp_path / "full_forg" / f"forgeries_{w}_1.png", page)
    table = load_signatures(tmp_path)
    assert table.attrs["layout"] == "cedar"
    assert list(table.columns[:3]) == ["path", "writer", "genuine"]
    assert table.groupby("writer")["genuine"].agg(["sum", "size"]).to_dict("list") == {"sum": [2, 2], "size": [3, 3]}


def test_bhsig260_layout(tmp_path, page):
    for w in ("001", "002"):
        write_scan(tmp_path / w / f"B-S-{int(w)}-G-01.tif", page)
        write_scan(tmp_path / w / f"B-S-{int(w)}-G-02.tif", page)
        write_scan(tmp_path / w / f"B-S-{int(w)}-F-01.tif", page)
    table = load_signatures(tmp_path)
    assert table.attrs["layout"] == "bhsig260"
    assert sorted(table.writer.unique()) == ["1", "2"]
    assert table.genuine.sum() == 4 and (~table.genuine).sum() == 2


def test_sigcomp_layout(tmp_path, page):
    for w in ("001", "002"):
        write_scan(tmp_path / w / f"{w}_01.png", page)
        write_scan(tmp_path / f"{w}_forg" / f"0105{w}_01.png", page)
    table = load_signatures(tmp_path)
    assert table.attrs["layout"] == "sigcomp"
    assert table[["writer", "genuine"]].values.tolist() == [["001", True], ["001", False], ["002", True], ["002", False]]


def test_generic_layout_round_trip(tmp_path, small_signatures):
    save_signatures(small_signatures, tmp_path)
    table = load_signatures(tmp_path)
    assert table.attrs["layout"] == "generic"
    assert len(table) == len(small_signatures.images)
    assert table.groupby("writer").genuine.sum().tolist() == [5] * 6


def test_layout_errors(tmp_path, page):
    with pytest.raises(FileNotFoundError):
        load_signatures(tmp_path / "missing")
    with pytest.raises(ValueError, match="no image files"):
        load_signatures(tmp_path)
    write_png(tmp_path / "scans" / "photo.png", page)
    with pytest.raises(ValueError, match="unrecognised signature layout.*1 image files"):
        load_signatures(tmp_path)


def test_writer_without_genuine_is_an_error(tmp_path, page):
    write_png(tmp_path / "full_org" / "original_1_1.png", page)
    write_png(tmp_path / "full_forg" / "forgeries_2_1.png", page)
    with pytest.raises(ValueError, match="forgeries but no genuine.*: 2"):
        load_signatures(tmp_path)


def test_real_sigcomp_folder(real_data):
    table = load_signatures(real_data)
    assert table.attrs["layout"] == "sigcomp"
    assert table.writer.nunique() == 43 and len(table) == 1149


def test_random_images_is_seeded(small_signatures):
    table = small_signatures.table
    a = random_images(table, 7, random_state=3)
    b = random_images(table, 7, random_state=3)
    assert len(a) == 7 and a.writer.tolist() == b.writer.tolist()
    assert random_images(table, 5, genuine=False, random_state=0).genuine.eq(False).all()
    with pytest.raises(ValueError, match="cannot pick"):
        random_images(table, 1000)


@pytest.mark.parametrize("negatives", ["skilled", "random", "both"])
def test_triplets(small_signatures, negatives):
    table = small_signatures.table.assign(path=[f"img{i}" for i in range(len(small_signatures.table))])
    triplets = make_triplets(table, n_per_writer=4, negatives=negatives, random_state=0)
    info = table.set_index("path")
    assert len(triplets) == 6 * 4
    for row in triplets.itertuples():
        assert info.loc[row.anchor, "genuine"] and info.loc[row.positive, "genuine"]
        assert info.loc[row.anchor, "writer"] == info.loc[row.positive, "writer"] == row.writer
        assert row.anchor != row.positive
        skilled = info.loc[row.negative, "writer"] == row.writer
        assert skilled == (row.negative_kind == "skilled")
        if skilled:
            assert not info.loc[row.negative, "genuine"]
    kinds = set(triplets.negative_kind)
    assert kinds == {"skilled": {"skilled"}, "random": {"random"}, "both": {"skilled", "random"}}[negatives]
    again = make_triplets(table, n_per_writer=4, negatives=negatives, random_state=0)
    pd.testing.assert_frame_equal(triplets, again)


def test_exhaustive_pairs_counts(small_signatures):
    table = small_signatures.table.assign(path=[f"img{i}" for i in range(len(small_signatures.table))])
    pairs = make_pairs(table, protocol="exhaustive", forgeries="skilled", writers=["w000", "w001"])
    # per writer: C(5, 2) = 10 genuine pairs and 5 x 3 = 15 skilled-forgery pairs
    assert pairs.groupby(["writer", "label"]).size().tolist() == [15, 10, 15, 10]
    both = make_pairs(table, forgeries="both", n_random_per_writer=4, random_state=0)
    assert (both.kind == "random").sum() == 6 * 4
    random_rows = both[both.kind == "random"]
    owner = table.set_index("path").writer
    assert (owner.loc[random_rows.questioned].to_numpy() != random_rows.writer.to_numpy()).all()


def test_balanced_pairs_and_image_column(small_signatures):
    pairs = make_pairs(small_signatures.table, protocol="balanced", n_per_writer=4, random_state=0)
    assert pairs.label.value_counts().to_dict() == {1: 24, 0: 24}
    assert isinstance(pairs.reference.iloc[0], np.ndarray)


def test_reference_sets_question_every_other_signature_against_k_references():
    table = pd.DataFrame({"path": [f"{w}{i}" for w in "abc" for i in range(6)], "writer": np.repeat(list("abc"), 6),
                          "genuine": [True] * 4 + [False] * 2 + [True] * 3 + [False] * 3 + [True] * 6})
    sets = make_reference_sets(table, 3, random_state=0)
    assert list(sets.columns) == ["questioned", "ref_1", "ref_2", "ref_3", "label", "writer"]
    assert sets.groupby("writer")["label"].agg(["sum", "size"]).to_dict("index") == {
        "a": {"sum": 1, "size": 3}, "c": {"sum": 3, "size": 3}}  # b has only 3 genuine: no questioned genuine left
    for row in sets.itertuples():
        refs = {row.ref_1, row.ref_2, row.ref_3}
        assert len(refs) == 3 and row.questioned not in refs
        assert table.set_index("path").loc[list(refs), "genuine"].all()
        assert (table.set_index("path").loc[[row.questioned, *refs], "writer"] == row.writer).all()
        assert row.label == table.set_index("path").loc[row.questioned, "genuine"]
    assert make_reference_sets(table, 3, random_state=0).equals(sets)
    with pytest.raises(ValueError, match="more than k=6"):
        make_reference_sets(table, 6)
    with pytest.raises(ValueError, match="positive"):
        make_reference_sets(table, 0)


def test_split_writers_and_groups(small_signatures):
    table = small_signatures.table
    train, test = split_writers(table, test_size=2, random_state=0)
    assert set(train.writer).isdisjoint(test.writer) and test.writer.nunique() == 2
    assert len(train) + len(test) == len(table)
    train, test = split_writers(table, test_writers=["w005"])
    assert set(test.writer) == {"w005"}
    pairs = make_pairs(table, protocol="balanced", n_per_writer=3, random_state=0)
    groups = writer_groups(pairs)
    for tr, te in GroupKFold(n_splits=3).split(pairs, groups=groups):
        assert set(pairs.writer.iloc[tr]).isdisjoint(pairs.writer.iloc[te])


def test_make_signatures_is_seeded_and_varied():
    a = make_signatures(n_writers=3, n_genuine=3, n_forged=2, image_size=(48, 96), random_state=1)
    b = make_signatures(n_writers=3, n_genuine=3, n_forged=2, image_size=(48, 96), random_state=1)
    assert a.images.shape == (15, 48, 96) and a.images.dtype == np.uint8
    np.testing.assert_array_equal(a.images, b.images)
    # dark ink on light paper, and no two samples identical
    assert np.median(a.images) > 200 and a.images.min() < 120
    flat = a.images.reshape(len(a.images), -1)
    assert len({row.tobytes() for row in flat}) == len(flat)
    with pytest.raises(ValueError, match="n_writers"):
        make_signatures(n_writers=0)


def test_copies_of_an_image_are_dropped_and_counted_whatever_their_bytes(tmp_path, page):
    for w in (1, 2):
        for i in (1, 2):
            write_scan(tmp_path / str(w) / f"B-S-{w}-G-0{i}.tif", page)
        write_scan(tmp_path / str(w) / f"B-S-{w}-F-01.tif", page)
    copy = tmp_path / "1" / "B-S-1-G-09.tif"
    copy.write_bytes((tmp_path / "1" / "B-S-1-G-01.tif").read_bytes())
    with pytest.warns(UserWarning, match="dropped 1 copies"):
        table = load_signatures(tmp_path)
    assert table.attrs["n_duplicates"] == 1 and len(table) == 6
    assert not table["path"].str.endswith("G-09.tif").any()
    kept = load_signatures(tmp_path, drop_duplicates=False)
    assert len(kept) == 7 and kept.attrs["n_duplicates"] == 0
    # the same image in other bytes: compressed otherwise, or in colour, is still a copy
    scan = Image.open(tmp_path / "1" / "B-S-1-G-02.tif")
    scan.save(tmp_path / "1" / "B-S-1-G-10.tif", compression="tiff_deflate")
    scan.convert("RGB").save(tmp_path / "1" / "B-S-1-G-11.tif")
    assert len({(tmp_path / "1" / f"B-S-1-G-{i}.tif").read_bytes() for i in ("02", "10", "11")}) == 3
    with pytest.warns(UserWarning, match="dropped 3 copies"):
        table = load_signatures(tmp_path)
    assert len(table) == 6 and not table["path"].str.contains("G-1[01]").any()
    # one pixel apart is another signature; so is the same image under another writer
    other = np.asarray(scan).copy()
    other[-1, -1] = 255 - other[-1, -1]
    Image.fromarray(other).save(tmp_path / "1" / "B-S-1-G-12.tif")
    (tmp_path / "2" / "B-S-2-G-09.tif").write_bytes(copy.read_bytes())
    with pytest.warns(UserWarning, match="dropped 3 copies"):
        assert len(load_signatures(tmp_path)) == 8


def test_several_folders_qualify_writers_by_data_set(tmp_path, page):
    for name in ("setA", "setB"):
        for i in (1, 2):
            write_scan(tmp_path / name / "001" / f"001_0{i}.png", page)
        write_scan(tmp_path / name / "001_forg" / "0201001_01.png", page)
    table = load_signatures([tmp_path / "setA", tmp_path / "setB"])
    assert sorted(table["writer"].unique()) == ["setA/001", "setB/001"]
    assert table.groupby("dataset").size().to_dict() == {"setA": 3, "setB": 3}
    assert table.attrs["layout"] == {"setA": "sigcomp", "setB": "sigcomp"}
    with pytest.raises(ValueError, match="distinct names"):
        load_signatures([tmp_path / "setA", tmp_path / "setA"])


def test_writer_folders_reached_through_links_are_read_once(tmp_path, page):
    real = tmp_path / "elsewhere"
    for w in ("001", "002"):
        for i in (1, 2):
            write_scan(real / w / f"{w}_0{i}.png", page)
        write_scan(real / f"{w}_forg" / f"0201{w}_01.png", page)
    data = tmp_path / "data"
    data.mkdir()
    for name in ("001", "001_forg", "002", "002_forg"):
        (data / name).symlink_to(real / name, target_is_directory=True)
    (data / "001" / "loop").symlink_to(data, target_is_directory=True)  # a loop must not hang the walk
    table = load_signatures(data)
    assert table.attrs["layout"] == "sigcomp" and len(table) == 6
    assert sorted(table["writer"].unique()) == ["001", "002"]


def test_check_writers_names_the_writers_that_cannot_be_used(small_signatures):
    from sigest.datasets import check_writers

    table = small_signatures.table
    assert check_writers(table) is table
    lonely = table.drop(index=table[(table["writer"] == "w003") & table["genuine"]].index[1:])
    with pytest.raises(ValueError, match=r"w003 \(1 genuine, 3 forged\)"):
        check_writers(lonely)


def test_a_folder_mixing_layouts_is_refused_with_what_was_found_where(tmp_path, page):
    for w in ("anna", "bert"):
        write_scan(tmp_path / w / "genuine" / "1.png", page)
        write_scan(tmp_path / w / "genuine" / "2.png", page)
        write_scan(tmp_path / w / "forged" / "1.png", page)
    write_scan(tmp_path / "cedar" / "forgeries_14_1.png", page)
    write_scan(tmp_path / "cedar" / "original_14_1.png", page)
    with pytest.raises(ValueError, match=r"mixes signature layouts: 6 file\(s\) in the generic layout.*cedar layout"):
        load_signatures(tmp_path)


def test_an_unreadable_folder_is_reported_as_unreadable(tmp_path, page, monkeypatch):
    import os

    for w in (1, 2):
        write_scan(tmp_path / str(w) / f"B-S-{w}-G-01.tif", page)
        write_scan(tmp_path / str(w) / f"B-S-{w}-G-02.tif", page)
    locked = tmp_path / "2"
    real_scandir = os.scandir

    def scandir(path="."):
        if os.fspath(path) == os.fspath(locked):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)  # as root, chmod cannot lock a folder
    with pytest.raises(PermissionError, match=r"cannot read the folder .*2: Permission denied"):
        load_signatures(tmp_path)


def test_writers_named_alike_in_different_subfolders_are_kept_apart(tmp_path, page):
    for subset in ("setA", "setB"):
        for i in (1, 2):
            write_scan(tmp_path / subset / "001" / "genuine" / f"{i}.png", page)
        write_scan(tmp_path / subset / "001" / "forged" / "1.png", page)
    with pytest.warns(UserWarning, match="1 writer name.*several subfolders.*'001'"):
        table = load_signatures(tmp_path)
    assert sorted(table["writer"].unique()) == ["setA/001", "setB/001"]
    assert table.groupby("writer")["genuine"].sum().tolist() == [2, 2]
