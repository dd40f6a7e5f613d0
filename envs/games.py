"""Atari game names, game pools and the published reference scores.

Game names are ALE ROM ids (`snake_case`, as `ale_py.roms` spells them); `resolve_game`
also accepts CamelCase and Gymnasium ids (`"SpaceInvaders"`, `"ALE/SpaceInvaders-v5"`,
`"SpaceInvadersNoFrameskip-v4"`). An unknown name is a one-line `UserError` that lists
the close matches.

Reference scores: the random-agent and human scores of the 57-game benchmark as
tabulated in Badia et al. 2020, "Agent57: Outperforming the Atari Human Benchmark",
Appendix H (they extend the table of Mnih et al. 2015, Nature, Extended Data Table 2,
to the games that paper did not play). The human-normalized score (Mnih et al. 2015,
Methods, "Evaluation procedure") is

    normalized = (agent - random) / (human - random)

so 0 is random play and 1 is the human tester. Games outside the 57 have no
reference scores; their normalized score is NaN.

The Leap paper's pool (Flennerhag et al. 2019, Section 4.3): meta-train on games whose
minimal action set has at most 10 actions, holding out Breakout and SpaceInvaders;
evaluate on the held-out games and on games with larger action sets. The paper's exact
list is not reproduced here; `LEAP_POOL` applies that rule to the 57 games that have
reference scores (`MINIMAL_ACTIONS`: ale_py's minimal action sets, checked by a test).
"""

from __future__ import annotations

import difflib
import functools
import math
import re

from leap_convrnn.errors import UserError
from leap_convrnn.registry import did_you_mean

# game -> (random, human): Badia et al. 2020 (Agent57), Appendix H, Table of
# "Random" and "Human" scores. Note: Mnih et al. 2015 list 16256.9 as random on
# video_pinball; the Agent57 table lists 0.0, which is used here.
REFERENCE_SCORES: dict[str, tuple[float, float]] = {
    "alien": (227.8, 7127.7),
    "amidar": (5.8, 1719.5),
    "assault": (222.4, 742.0),
    "asterix": (210.0, 8503.3),
    "asteroids": (719.1, 47388.7),
    "atlantis": (12850.0, 29028.1),
    "bank_heist": (14.2, 753.1),
    "battle_zone": (2360.0, 37187.5),
    "beam_rider": (363.9, 16926.5),
    "berzerk": (123.7, 2630.4),
    "bowling": (23.1, 160.7),
    "boxing": (0.1, 12.1),
    "breakout": (1.7, 30.5),
    "centipede": (2090.9, 12017.0),
    "chopper_command": (811.0, 7387.8),
    "crazy_climber": (10780.5, 35829.4),
    "defender": (2874.5, 18688.9),
    "demon_attack": (152.1, 1971.0),
    "double_dunk": (-18.6, -16.4),
    "enduro": (0.0, 860.5),
    "fishing_derby": (-91.7, -38.7),
    "freeway": (0.0, 29.6),
    "frostbite": (65.2, 4334.7),
    "gopher": (257.6, 2412.5),
    "gravitar": (173.0, 3351.4),
    "hero": (1027.0, 30826.4),
    "ice_hockey": (-11.2, 0.9),
    "jamesbond": (29.0, 302.8),
    "kangaroo": (52.0, 3035.0),
    "krull": (1598.0, 2665.5),
    "kung_fu_master": (258.5, 22736.3),
    "montezuma_revenge": (0.0, 4753.3),
    "ms_pacman": (307.3, 6951.6),
    "name_this_game": (2292.3, 8049.0),
    "phoenix": (761.4, 7242.6),
    "pitfall": (-229.4, 6463.7),
    "pong": (-20.7, 14.6),
    "private_eye": (24.9, 69571.3),
    "qbert": (163.9, 13455.0),
    "riverraid": (1338.5, 17118.0),
    "road_runner": (11.5, 7845.0),
    "robotank": (2.2, 11.9),
    "seaquest": (68.4, 42054.7),
    "skiing": (-17098.1, -4336.9),
    "solaris": (1236.3, 12326.7),
    "space_invaders": (148.0, 1668.7),
    "star_gunner": (664.0, 10250.0),
    "surround": (-10.0, 6.5),
    "tennis": (-23.8, -8.3),
    "time_pilot": (3568.0, 5229.2),
    "tutankham": (11.4, 167.6),
    "up_n_down": (533.4, 11693.2),
    "venture": (0.0, 1187.5),
    "video_pinball": (0.0, 17667.9),
    "wizard_of_wor": (563.5, 4756.5),
    "yars_revenge": (3092.9, 54576.9),
    "zaxxon": (32.5, 9173.3),
}

ATARI_57: tuple[str, ...] = tuple(REFERENCE_SCORES)

# game -> size of its minimal action set, as ale_py 0.12 reports it (tests/envs/test_games.py
# checks the table against ale_py); other games are asked from ale_py (a ROM load).
MINIMAL_ACTIONS: dict[str, int] = {
    "alien": 18,
    "amidar": 10,
    "assault": 7,
    "asterix": 9,
    "asteroids": 14,
    "atlantis": 4,
    "bank_heist": 18,
    "battle_zone": 18,
    "beam_rider": 9,
    "berzerk": 18,
    "bowling": 6,
    "boxing": 18,
    "breakout": 4,
    "centipede": 18,
    "chopper_command": 18,
    "crazy_climber": 9,
    "defender": 18,
    "demon_attack": 6,
    "double_dunk": 18,
    "enduro": 9,
    "fishing_derby": 18,
    "freeway": 3,
    "frostbite": 18,
    "gopher": 8,
    "gravitar": 18,
    "hero": 18,
    "ice_hockey": 18,
    "jamesbond": 18,
    "kangaroo": 18,
    "krull": 18,
    "kung_fu_master": 14,
    "montezuma_revenge": 18,
    "ms_pacman": 9,
    "name_this_game": 6,
    "phoenix": 8,
    "pitfall": 18,
    "pong": 6,
    "private_eye": 18,
    "qbert": 6,
    "riverraid": 18,
    "road_runner": 18,
    "robotank": 18,
    "seaquest": 18,
    "skiing": 3,
    "solaris": 18,
    "space_invaders": 6,
    "star_gunner": 18,
    "surround": 5,
    "tennis": 18,
    "time_pilot": 10,
    "tutankham": 8,
    "up_n_down": 6,
    "venture": 18,
    "video_pinball": 9,
    "wizard_of_wor": 10,
    "yars_revenge": 18,
    "zaxxon": 18,
}

LEAP_HELD_OUT = ("breakout", "space_invaders")
"""Held out from meta-training in the Leap paper (both have at most 10 actions)."""

LEAP_LARGE_ACTION_TEST = ("kung_fu_master", "road_runner", "star_gunner")
"""Held-out games with larger action sets (14, 18, 18 actions), chosen here."""

MAX_LEAP_ACTIONS = 10
"""The Leap paper's meta-training pool: games with at most this many actions."""

# The 57 games with at most 10 actions in their minimal action set (ale_py 0.12),
# minus LEAP_HELD_OUT. tests/envs/test_games.py recomputes this list from ale_py.
LEAP_TRAIN = (
    "amidar",  # 10 actions
    "assault",  # 7
    "asterix",  # 9
    "atlantis",  # 4
    "beam_rider",  # 9
    "bowling",  # 6
    "crazy_climber",  # 9
    "demon_attack",  # 6
    "enduro",  # 9
    "freeway",  # 3
    "gopher",  # 8
    "ms_pacman",  # 9
    "name_this_game",  # 6
    "phoenix",  # 8
    "pong",  # 6
    "qbert",  # 6
    "skiing",  # 3
    "surround",  # 5
    "time_pilot",  # 10
    "tutankham",  # 8
    "up_n_down",  # 6
    "video_pinball",  # 9
    "wizard_of_wor",  # 10
)

SMALL_TRAIN = ("assault", "demon_attack", "ms_pacman", "qbert")
"""The CPU-sized pool's training games (`atari_small`): four games of the Leap pool whose
random play already scores (7, 6, 9 and 6 actions), so that short inner loops see rewards."""

SPLITS = ("train", "validation", "test")

POOLS: dict[str, dict[str, tuple[str, ...]]] = {
    "leap": {
        "train": LEAP_TRAIN,
        "validation": LEAP_HELD_OUT,
        "test": LEAP_HELD_OUT + LEAP_LARGE_ACTION_TEST,
    },
    "small": {"train": SMALL_TRAIN, "validation": LEAP_HELD_OUT, "test": LEAP_HELD_OUT},
    "atari57": {"train": ATARI_57, "validation": ATARI_57, "test": ATARI_57},
}
"""Named pools: split -> games. `leap` is the paper's setup (its validation split is the
two held-out small-action games, a subset of its test split); `small` trains on four games
of the Leap pool and holds out the same two (`atari_small`); `atari57` is every game
with reference scores, the same for each split."""


@functools.cache
def rom_ids() -> tuple[str, ...]:
    """Every ROM id that ships in the installed ale-py wheel."""
    from ale_py import roms

    return tuple(sorted(roms.get_all_rom_ids()))


def _canonical(name: str) -> str:
    """`ALE/SpaceInvaders-v5`, `SpaceInvadersNoFrameskip-v4`, `SpaceInvaders`: `space_invaders`."""
    text = name.strip()
    text = text.removeprefix("ALE/")
    text = re.sub(r"-v\d+$", "", text)
    text = re.sub(r"(NoFrameskip|Deterministic)$", "", text)
    text = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", text)
    return text.lower().replace("-", "_")


def resolve_game(name: str) -> str:
    """The ALE ROM id for `name`, or a one-line UserError listing the close matches."""
    game = _canonical(name)
    known = rom_ids()
    if game in known:
        return game
    close = difflib.get_close_matches(game, known, n=5, cutoff=0.6)
    hint = f"; close matches: {', '.join(close)}" if close else ""
    raise UserError(
        f"unknown Atari game {name!r}{hint} (ROM ids from ale_py, e.g. 'space_invaders')"
    )


def resolve_pool(pool: str | list[str] | tuple[str, ...], split: str) -> tuple[str, ...]:
    """The games of `pool` for `split`: a named pool from `POOLS`, or an explicit list.

    An explicit list is the same pool for every split. Names are resolved (and checked)
    with `resolve_game`; duplicates are dropped, order kept.
    """
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r}; accepted: {', '.join(SPLITS)}")
    if isinstance(pool, str):
        if pool not in POOLS:
            hint = did_you_mean(pool, POOLS)
            raise UserError(
                f"unknown game pool {pool!r}{hint}; accepted: {', '.join(POOLS)} "
                "or a list of game names"
            )
        names: tuple[str, ...] | list[str] = POOLS[pool][split]
    else:
        names = list(pool)
    games = tuple(dict.fromkeys(resolve_game(n) for n in names))
    if not games:
        raise UserError("the game pool is empty; give at least one game name")
    return games


@functools.cache
def num_actions(game: str, full_action_space: bool = False) -> int:
    """Size of the action set of `game` (minimal set, or all 18 with `full_action_space`)."""
    if full_action_space:
        return 18
    game = resolve_game(game)
    if game in MINIMAL_ACTIONS:
        return MINIMAL_ACTIONS[game]
    return ale_action_count(game)


def ale_action_count(game: str) -> int:
    """The minimal action set's size as ale_py reports it (loads the ROM: ~0.1 s)."""
    import ale_py
    from ale_py import roms

    ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Error)
    path = roms.get_rom_path(resolve_game(game))
    if path is None:  # resolve_game only accepts games whose ROM ships with ale-py
        raise UserError(f"ale-py has no ROM for {game!r}")
    ale = ale_py.ALEInterface()
    ale.loadROM(path)
    return len(ale.getMinimalActionSet())


def reference_scores(game: str) -> tuple[float, float] | None:
    """(random, human) scores of `game` from the published table, or None if it has none."""
    return REFERENCE_SCORES.get(game)


def normalized_score(game: str, score: float) -> float:
    """Human-normalized score (score - random) / (human - random); NaN without references."""
    ref = REFERENCE_SCORES.get(game)
    if ref is None or math.isnan(score):
        return math.nan
    random, human = ref
    return (score - random) / (human - random)
