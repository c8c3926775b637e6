"""The sweep's settings, the data-driven proposal, the summary (winner, spread, proposal rank) and the
`settings=<file>` form that stage=teacher accepts: no Ray needed."""

import math

import pytest
import torch

from kacdist.config import ConfigError, load_config
from kacdist.config.schema import TuneConfig
from kacdist.kac.law import kac_variance
from kacdist.tune.proposal import MIN_RATE, propose
from kacdist.tune.results import TrialRecord, best_yaml, summarize
from kacdist.tune.space import PAPER_GRID, Setting, sweep_settings


def test_the_paper_grid_is_table_b2_and_the_proposal_joins_it_once():
    settings = sweep_settings(TuneConfig())
    assert [(s.a, s.c, s.g) for s in settings][:6] == [(a, c, "t") for a, c in PAPER_GRID["t"]]
    assert len(settings) == 12 and (3000.0, 20.0, "t2") in [(s.a, s.c, s.g) for s in settings]
    assert len(sweep_settings(TuneConfig(schedules=["t2"]), Setting(3000.0, 20.0, "t2", origin="proposal"))) == 6
    assert sweep_settings(TuneConfig(schedules=["t"]), Setting(9.0, 2.0, "t", origin="proposal"))[-1].origin == "proposal"


def test_random_space_is_log_uniform_in_range_and_seeded():
    tc = TuneConfig(space="random", trials=50, a_min=10, a_max=1000, c_min=1, c_max=4, schedules=["t"], seed=3)
    settings = sweep_settings(tc)
    assert settings == sweep_settings(tc) and len(settings) == 50
    assert all(10 <= s.a <= 1000 and 1 <= s.c <= 4 for s in settings)
    assert 5 < sum(s.a < 100 for s in settings) < 45  # about half below the geometric middle


def test_given_settings_are_parsed_and_bad_ones_refused():
    cfg = load_config(["stage=tune", "tune.settings=[25/2/t,3000/20/t2]"])
    assert [(s.a, s.c, s.g) for s in sweep_settings(cfg.tune)] == [(25.0, 2.0, "t"), (3000.0, 20.0, "t2")]
    for bad, message in (("[25/2]", "write a/c/g"), ("[25/2/t3]", "allowed values are t, t2"), ("[0/2/t]", "must be positive")):
        with pytest.raises(ConfigError, match=message):
            load_config(["stage=tune", f"tune.settings={bad}"])
    with pytest.raises(ConfigError, match="tune.reduction_factor=1 is invalid"):
        load_config(["stage=tune", "tune.reduction_factor=1"])


def test_the_proposal_matches_prior_spread_to_the_data_and_covers_its_range():
    torch.manual_seed(0)
    wide = torch.rand(500, 1, 8, 8) * 2 - 1  # uniform on [-1, 1]: sd 0.577, range 2
    p = propose(wide)
    assert p.setting.c == 2.0 and p.setting.g == "t"
    assert abs(p.prior_sd - p.pixel_sd) < 0.01 and p.setting.a > MIN_RATE
    assert math.isclose(float(kac_variance(torch.tensor([1.0]), p.setting.a, p.setting.c)) ** 0.5, p.prior_sd, rel_tol=1e-6)
    narrow = torch.rand(500, 1, 8, 8) * 0.2 - 0.1  # a narrow spread wants a large a (or the atom floor)
    q = propose(narrow)
    assert q.setting.c == 0.5 and q.setting.a > p.setting.a
    assert p.a_range == (float(f"{p.setting.a / 4:.3g}"), float(f"{p.setting.a * 4:.3g}"))


def _rec(a, c, g, values, origin="grid", seed=0, budget=1.0, kimg=None):
    return TrialRecord(f"a{a}-c{c}-g{g}-seed{seed}", a, c, g, seed, origin, kimg=kimg or [0.5, 1.0][: len(values)],
                       metric=values, budget_kimg=budget)


def test_summary_ranks_completed_trials_reports_spread_and_the_proposal():
    records = [_rec(25, 2, "t", [3.0, 2.0]), _rec(100, 5, "t", [2.5, 1.5]), _rec(1, 1, "t", [9.0]),  # stopped at 0.5
               _rec(9.21, 2, "t", [3.0, 2.4], origin="proposal"), _rec(100, 5, "t", [2.5, 1.7], origin="spread", seed=1)]
    s = summarize(records, "classifier FD", (9.21, 2.0, "t"))
    assert [r.a for r in s.ranking] == [100, 25, 9.21] and s.winner.a == 100
    assert records[2].stopped_early and not records[2].completed
    assert s.spread == [1.5, 1.7] and abs(s.spread_sd - 0.1414) < 1e-3
    assert s.proposal_rank == 3 and abs(s.proposal_ratio - 1.6) < 1e-9
    yaml_text = best_yaml(s.winner)
    assert "a: 100" in yaml_text and "g: t" in yaml_text


def test_stage_teacher_takes_the_best_setting_as_a_file(tmp_path):
    best = tmp_path / "best.yaml"
    best.write_text(best_yaml(_rec(900, 10, "t2", [1.0])))
    cfg = load_config(["stage=teacher", f"settings={best}", "train.lr=3e-4"])
    assert (cfg.kac.a, cfg.kac.c, cfg.kac.g, cfg.train.lr) == (900.0, 10.0, "t2", 3e-4)
    # a dotted key after it still has the last word
    assert load_config(["stage=teacher", f"settings={best}", "kac.c=12"]).kac.c == 12.0
    with pytest.raises(ConfigError, match="no such file"):
        load_config(["stage=teacher", f"settings={tmp_path / 'missing.yaml'}"])


def test_a_proposal_that_asha_stopped_is_ranked_where_it_stopped():
    records = [_rec(25, 2, "t", [3.0, 2.0]), _rec(100, 5, "t", [2.5, 1.5]), _rec(9.21, 2, "t", [2.8], origin="proposal")]
    s = summarize(records, "classifier FD", (9.21, 2.0, "t"))
    assert s.proposal_rank is None and s.proposal_stop == (0.5, 2.8, 2, 3)
