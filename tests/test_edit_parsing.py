"""parse_score reads the usual answer shapes and never invents a score."""

import pytest

from r3d.edit import parse_score, parse_score_explained


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Score: 8.5", 8.5),
        ("8.5/10", 8.5),
        ("Rating: 7", 7.0),
        ('{"score": 8}', 8.0),
        ('```json\n{"reasoning": "kept the cups", "score": [6]}\n```', 6.0),
        ('{"score": "7"}', 7.0),
        ("I would rate this edit a solid 6.", 6.0),
        ("7", 7.0),
        ("7.", 7.0),
        ("**Score:** 9", 9.0),
        ("Score (0-10): 4", 4.0),
        ("The overall score is 5/10.", 5.0),
        ("score of 8 out of 10", 8.0),
        ("I give it 10 out of 10!", 10.0),
        ("Score: 0", 0.0),
        ("Score: 7\nRating: 7", 7.0),
        ("Qwen3 judged it. Score: 3", 3.0),
        ("The edit is good. Final rating: 9/10. The 3 cups remain.", 9.0),
    ],
)
def test_reads_the_usual_shapes(text, expected):
    """Every common way a judge writes one score in range yields exactly that score."""
    assert parse_score(text) == expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("Score: 12", "outside"),
        ("Score: -1", "outside"),
        ("Score: 4/5", "another scale"),
        ("8/100", "another scale"),
        ("Score: 7. Rating: 8", "ambiguous"),
        ("I'd give it 8/10, though before it was 6/10", "ambiguous"),
        ("On a rating scale from 0 to 10, I'd give 7", "ambiguous"),
        ("It added 2 cats.", "no score"),
        ("ten", "no score"),
        ('{"reasoning": "fine"}', "no score field"),
        ('{"score": [7, 8]}', "2 values"),
        ('{"score": true}', "not a number"),
        ("", "empty"),
        (None, "empty"),
    ],
)
def test_refuses_to_guess(text, reason):
    """Ambiguous, out-of-range, wrong-scale or score-less texts give None and say why."""
    score, why = parse_score_explained(text)
    assert score is None and reason in why
    assert parse_score(text) is None


def test_max_score_sets_the_scale():
    """'4/5' is a score on a 0-5 scale and rejected on a 0-10 scale; the range follows max_score."""
    assert parse_score("4/5", max_score=5) == 4.0
    assert parse_score("Score: 7", max_score=5) is None


@pytest.mark.parametrize(
    "text, expected",
    [
        ("评分：7", 7.0),  # full-width colon
        ("分数: 8/10", 8.0),
        ("７分", 7.0),  # full-width digit, "7 points"
        ("评分为7", 7.0),
        ("我的评分：９。", 9.0),
        ("得分：7分", 7.0),
        ("满分10分，我给7分", 7.0),  # "out of 10 points, I give 7 points": the maximum is not a score
        ("Score：８／１０", 8.0),
    ],
)
def test_reads_chinese_and_full_width_answers(text, expected):
    assert parse_score(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "Score: 1e309",
        "Score: 0x7",
        "Score: 3.5.1",
        '{"score": 1e309}',
        "这张图片很好",
        "评分：很好",
        "10分制",
    ],
)
def test_numbers_that_are_not_scores_give_none(text):
    """'1e309' once read as 1.0 and '0x7' as 0.0: a number glued to letters or dots is not a score."""
    assert parse_score(text) is None
