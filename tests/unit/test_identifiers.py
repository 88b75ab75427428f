import pytest

from chime_egress.policy.identifiers import app_key_problem, tenant_id_problem


@pytest.mark.parametrize(
    "key", ["AppKey1", "a", "0123", "Zm9vYmFy+/==", "f" * 64, "!#$%&'()*+-./<=>?@[]^_`{|}~"]
)
def test_valid_app_keys(key):
    assert app_key_problem(key) is None


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("", "empty"),
        ("App Key", "whitespace"),
        ("App\tKey", "whitespace"),
        ("App,Key", "','"),
        ("App;Key", "';'"),
        ("App:Key", "':'"),
        ("App\x01Key", "printable ASCII"),
        ("Appé", "printable ASCII"),
    ],
)
def test_invalid_app_keys_say_why(key, reason):
    problem = app_key_problem(key)
    assert problem is not None and reason in problem


@pytest.mark.parametrize(
    "tenant", ["ab", "orgId", "tenant-1_x!@#$", "aaab", "x" * 3 + "y" * 3 + "z" * 3, "Ab" * 128]
)
def test_valid_tenant_ids(tenant):
    assert tenant_id_problem(tenant) is None


@pytest.mark.parametrize(
    ("tenant", "reason"),
    [
        ("a", "1 character long"),
        ("x" * 257, "257 characters"),
        ("", "0 characters"),
        ("org id", "' '"),
        ("org:id", "':'"),
        ("org,id", "','"),
        ("org;id", "';'"),
        ("orgé", "'é'"),
        ("aaaa", "four or more"),
        ("ab----cd", "four or more"),
    ],
)
def test_invalid_tenant_ids_say_why(tenant, reason):
    problem = tenant_id_problem(tenant)
    assert problem is not None and reason in problem
