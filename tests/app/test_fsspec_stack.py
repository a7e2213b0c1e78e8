"""The Python data stack on eotdl:// against a real server: xarray on a Zarr store through
`fsspec.get_mapper`, and, where installed (`pip install -e '.[stack]'`), xarray on netCDF
(h5netcdf) and Dask's dataframes computed in worker processes, pandas on Parquet (pyarrow)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

xr = pytest.importorskip("xarray")
pytest.importorskip("zarr")

from tests.fs.datasets import ingest, write_metadata  # noqa: E402

ROWS = 3000


@pytest.fixture(scope="module")
def tables(repo_server, tmp_path_factory):
    """A version holding a data cube as Zarr (and netCDF with h5netcdf), a table as 4 CSV parts (and
    Parquet with pyarrow); (record name, the cube, the table, fsspec options)."""
    name = f"stack-{id(tmp_path_factory)}"
    folder = tmp_path_factory.mktemp("stack")
    write_metadata(folder, name)
    cube = xr.Dataset({"t": (("y", "x"), np.arange(200 * 300, dtype="float32").reshape(200, 300))},
                      coords={"y": np.arange(200), "x": np.arange(300)})
    cube.to_zarr(folder / "cube.zarr", zarr_format=2, consolidated=True, encoding={"t": {"chunks": (50, 300)}})
    try:
        cube.to_netcdf(folder / "cube.nc", engine="h5netcdf")
    except (ImportError, ValueError):  # h5netcdf missing: its test skips
        pass
    table = pd.DataFrame({"id": range(ROWS), "label": ["water", "forest", "urban"] * (ROWS // 3),
                          "v": np.arange(ROWS) * 0.5})
    (folder / "parts").mkdir()
    for i in range(4):
        table.iloc[i * ROWS // 4:(i + 1) * ROWS // 4].to_csv(folder / "parts" / f"part{i}.csv", index=False)
    try:
        table.to_parquet(folder / "table.parquet", row_group_size=500)
    except ImportError:  # no pyarrow: its test skips
        pass
    ingest(repo_server, folder)
    options = {"api_url": repo_server.url, "cache_dir": str(tmp_path_factory.mktemp("stack-cache"))}
    return name, cube, table, options


def test_xarray_opens_a_zarr_store_through_get_mapper(tables):
    name, cube, _, options = tables
    import fsspec

    store = fsspec.get_mapper(f"eotdl://datasets/{name}/v1/cube.zarr", **options)
    with xr.open_zarr(store) as got:
        xr.testing.assert_identical(got.load(), cube)
    with pytest.raises(PermissionError):  # a version's mapper is read-only
        store["new-key"] = b"x"


def _in_worker_processes():
    dask = pytest.importorskip("dask")
    return dask.config.set(scheduler="processes", num_workers=2)  # spawned workers: the filesystem is pickled


def test_xarray_netcdf_from_an_open_file_computes_in_worker_processes(tables):
    """xarray sends the open file to Dask's workers: it failed to pickle ('_thread.lock')."""
    name, cube, _, options = tables
    pytest.importorskip("h5netcdf")
    import fsspec

    fs = fsspec.filesystem("eotdl", **options)
    with fs.open(f"datasets/{name}/v1/cube.nc") as f, xr.open_dataset(f, engine="h5netcdf", chunks={"y": 50}) as got:
        with _in_worker_processes():
            assert float(got["t"].sum().compute()) == float(cube["t"].sum())


def test_dask_read_csv_of_several_parts_in_worker_processes(tables):
    name, _, table, options = tables
    dd = pytest.importorskip("dask.dataframe")
    frame = dd.read_csv(f"eotdl://datasets/{name}/v1/parts/*.csv", storage_options=options)
    assert frame.npartitions == 4
    with _in_worker_processes():
        got = frame.compute().reset_index(drop=True)
    pd.testing.assert_frame_equal(got, table, check_dtype=False)  # dask's labels are pyarrow strings


def test_pandas_reads_parquet_columns(tables):
    name, _, table, options = tables
    pytest.importorskip("pyarrow")
    got = pd.read_parquet(f"eotdl://datasets/{name}/v1/table.parquet", columns=["v"], storage_options=options)
    assert got.equals(table[["v"]])
