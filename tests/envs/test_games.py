"""Game names, pools and human-normalized scores."""

from __future__ import annotations

import math

import pytest

from envs import games
from envs.games import (
    LEAP_HELD_OUT,
    LEAP_LARGE_ACTION_TEST,
    LEAP_TRAIN,
    MAX_LEAP_ACTIONS,
    normalized_score,
    num_actions,
    resolve_game,
    resolve_pool,
)
from leap_convrnn.errors import UserError


@pytest.mark.parametrize(
    "name",
    ["space_invaders", "SpaceInvaders", "ALE/SpaceInvaders-v5", "SpaceInvadersNoFrameskip-v4"],
)
def test_resolve_game_accepts_rom_ids_and_gymnasium_ids(name: str) -> None:
    assert resolve_game(name) == "space_invaders"


def test_resolve_game_camel_case_with_single_letters() -> None:
    assert resolve_game("UpNDown") == "up_n_down"
    assert resolve_game("MsPacman") == "ms_pacman"


def test_unknown_game_is_one_line_with_close_matches() -> None:
    with pytest.raises(UserError) as info:
        resolve_game("breakuot")
    message = str(info.value)
    assert "\n" not in message
    assert "'breakuot'" in message
    assert "breakout" in message.split("close matches:")[1]


def test_unknown_game_without_close_match_still_names_it() -> None:
    with pytest.raises(UserError, match="unknown Atari game 'zzzzqqq'"):
        resolve_game("zzzzqqq")


def test_normalized_score_uses_published_breakout_numbers() -> None:
    # Badia et al. 2020 / Mnih et al. 2015: Breakout random 1.7, human 30.5.
    assert games.REFERENCE_SCORES["breakout"] == (1.7, 30.5)
    assert normalized_score("breakout", 1.7) == pytest.approx(0.0)
    assert normalized_score("breakout", 30.5) == pytest.approx(1.0)
    assert normalized_score("breakout", 16.1) == pytest.approx(0.5)
    # Pong: random -20.7, human 14.6; a score of 21 is (21 + 20.7) / 35.3.
    assert normalized_score("pong", 21.0) == pytest.approx(41.7 / 35.3)


def test_normalized_score_is_nan_without_reference() -> None:
    assert math.isnan(normalized_score("air_raid", 100.0))
    assert math.isnan(normalized_score("pong", math.nan))


def test_reference_table_has_the_57_games_as_rom_ids() -> None:
    assert len(games.ATARI_57) == 57
    assert set(games.ATARI_57) <= set(games.rom_ids())
    for random, human in games.REFERENCE_SCORES.values():
        assert human > random


def test_leap_pool_follows_the_paper_rule() -> None:
    """Train: every one of the 57 games with <= 10 actions except Breakout and SpaceInvaders."""
    small = {g for g in games.ATARI_57 if num_actions(g) <= MAX_LEAP_ACTIONS}
    assert set(LEAP_TRAIN) == small - set(LEAP_HELD_OUT)
    assert set(LEAP_HELD_OUT) <= small
    assert all(num_actions(g) > MAX_LEAP_ACTIONS for g in LEAP_LARGE_ACTION_TEST)
    test = resolve_pool("leap", "test")
    assert not set(test) & set(LEAP_TRAIN)
    assert set(LEAP_HELD_OUT) | set(LEAP_LARGE_ACTION_TEST) == set(test)


@pytest.mark.parametrize("game", ["breakout", "pong", "kung_fu_master", "amidar", "alien"])
def test_action_table_matches_ale_py(game: str) -> None:
    assert games.MINIMAL_ACTIONS[game] == games.ale_action_count(game)


@pytest.mark.slow
def test_whole_action_table_matches_ale_py() -> None:
    """Loads all 57 ROMs (several seconds)."""
    for game in games.ATARI_57:
        assert games.MINIMAL_ACTIONS[game] == games.ale_action_count(game), game


def test_games_outside_the_table_ask_ale_py() -> None:
    assert "air_raid" not in games.MINIMAL_ACTIONS
    assert num_actions("AirRaid") == games.ale_action_count("air_raid")
    assert num_actions("pong", full_action_space=True) == 18


def test_explicit_pool_is_resolved_and_deduplicated() -> None:
    assert resolve_pool(["Pong", "pong", "breakout"], "test") == ("pong", "breakout")


def test_bad_pool_and_split_are_user_errors() -> None:
    with pytest.raises(UserError, match="did you mean leap"):
        resolve_pool("laep", "train")
    with pytest.raises(UserError, match="accepted: train, validation, test"):
        resolve_pool("leap", "training")
    with pytest.raises(UserError, match="close matches: pong"):
        resolve_pool(["pongg"], "train")


def test_small_pool_trains_on_leap_games_and_holds_out_the_papers_pair() -> None:
    train = resolve_pool("small", "train")
    assert len(train) == 4 and set(train) <= set(resolve_pool("leap", "train"))
    assert resolve_pool("small", "test") == resolve_pool("leap", "validation")
    assert not set(train) & set(resolve_pool("small", "test"))
