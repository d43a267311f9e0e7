"""The stack's per-model alarms on the container's EMF metrics, and ContainerMetricsConfig.

The alarms must name exactly what the container writes: the namespace it reads from the
environment the stack gives it, the metric names ``scorer.metrics.emf`` derives from the
worker's Prometheus families, and one of the dimension sets its documents declare. So the
expected values here come from scorer itself (``load_config``, ``metric_name``,
``EmfDocuments`` over the worker's own metrics, ``model_hash``), not from copied strings.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk.assertions import Annotations, Match, Template
from prometheus_client.metrics import MetricWrapperBase
from scorer_infra import ScorerEndpointStack, emf_metrics, settings_from_context
from scorer_infra.alarms import model_alarm_name

from scorer.cache.keys import model_hash
from scorer.config import load_config
from scorer.errors import ConfigError, ScorerError
from scorer.metrics import worker
from scorer.metrics.emf import MODEL_LABEL, EmfDocuments, metric_name

ACCOUNT = "123456789012"  # the documentation account id; nothing is deployed
IMAGE = f"{ACCOUNT}.dkr.ecr.eu-west-1.amazonaws.com/scorer:3f2c1ab"
PREFIX = "s3://creative-models/scorer/prod/"
TOPIC = f"arn:aws:sns:eu-west-1:{ACCOUNT}:scorer-alarms"
STACK = "ScorerEndpoint"
NAMESPACE = "Creative/Scoring"
# names no other test gives the worker's global metrics (they are borrowed below)
MODELS = ("infra-alarm-a", "infra-alarm-b.v2")
TARGETS = ("creative-v3.tar.gz", "market/fr.tar.gz")


class Synth:
    """One synthesised app: its stack and the template as JSON."""

    def __init__(self, build_app: Any, context: dict[str, Any], outdir: Path) -> None:
        app = cdk.App(context=context, outdir=str(outdir))
        build_app(app)
        self.stack: ScorerEndpointStack = app.node.find_child(STACK)  # type: ignore[assignment]
        self.template: dict[str, Any] = Template.from_stack(self.stack).to_json()

    def one(self, type_name: str) -> dict[str, Any]:
        (found,) = [
            r["Properties"] for r in self.template["Resources"].values() if r["Type"] == type_name
        ]
        return found

    def alarms(self) -> dict[str, dict[str, Any]]:
        """Alarm properties by alarm name."""
        return {
            r["Properties"]["AlarmName"]: r["Properties"]
            for r in self.template["Resources"].values()
            if r["Type"] == "AWS::CloudWatch::Alarm"
        }

    def container_environment(self) -> dict[str, str]:
        environment: dict[str, str] = self.one("AWS::SageMaker::Model")["PrimaryContainer"][
            "Environment"
        ]
        return environment


@pytest.fixture(scope="module")
def build_app(cdk_app_module: ModuleType) -> Any:
    return cdk_app_module.build_app


@pytest.fixture(scope="module")
def multi(build_app: Any, tmp_path_factory: pytest.TempPathFactory) -> Synth:
    """cpu-multi-model, per-model alarms for two models as `-c` strings give them."""
    context = {
        "image_uri": IMAGE,
        "model_data_prefix": PREFIX,
        "metrics_namespace": NAMESPACE,
        "alarm_models": ",".join(MODELS),
        "alarm_model_5xx_percent": "2",
        "alarm_model_p99_ms": "2500",
        "environment": '{"SCORER_EMF_INTERVAL_SECONDS": "90"}',
        "alarm_topic_arn": TOPIC,
        "metrics_publish_frequency_seconds": "30",
    }
    return Synth(build_app, context, tmp_path_factory.mktemp("multi"))


@pytest.fixture(scope="module")
def single(build_app: Any, tmp_path_factory: pytest.TempPathFactory) -> Synth:
    """gpu-self-managed, alarms for two TargetModel keys as cdk.json gives a list."""
    context = {
        "mode": "gpu-self-managed",
        "image_uri": IMAGE,
        "model_data_prefix": PREFIX,
        "autoscaling": False,
        "alarm_target_models": list(TARGETS),
    }
    return Synth(build_app, context, tmp_path_factory.mktemp("single"))


SCRAPED = {"image_uri": IMAGE, "model_data_prefix": PREFIX, "autoscaling": False}


@pytest.fixture(scope="module")
def plain(build_app: Any, tmp_path_factory: pytest.TempPathFactory) -> Synth:
    return Synth(build_app, SCRAPED, tmp_path_factory.mktemp("plain"))


@pytest.fixture(scope="module")
def scraped(build_app: Any, tmp_path_factory: pytest.TempPathFactory) -> Synth:
    """The same endpoint with ContainerMetricsConfig asked for."""
    context = {
        **SCRAPED,
        "container_metrics_config": "true",
        "metrics_publish_frequency_seconds": "60",
    }
    return Synth(build_app, context, tmp_path_factory.mktemp("scraped"))


# --- what the container writes -----------------------------------------------------------


def family_name(metric: MetricWrapperBase) -> tuple[str, str]:
    """A worker metric's Prometheus family name and type."""
    (family,) = metric.describe()
    return family.name, family.type


def emf_name(metric: MetricWrapperBase) -> str:
    """The EMF metric name scorer writes for a worker metric."""
    return metric_name(*family_name(metric))[0]


Documents = list[dict[str, Any]]


@pytest.fixture
def written() -> Iterator[Callable[[str, dict[str, str]], Documents]]:
    """Per model, the EMF documents scorer writes after a 200, a 500 and a 503 and one timed
    request, from the worker's own metrics, in the namespace the container reads from the
    environment the stack gives it (filled in by each test)."""
    codes = ("200", "500", "503")
    documents: dict[str, Documents] = {}

    def write(model: str, environment: dict[str, str]) -> Documents:
        for code in codes:
            worker.REQUESTS.labels(model, code).inc()
        worker.REQUEST_DURATION.labels(model).observe(0.2)
        namespace = load_config(environment).metrics_namespace
        families = [*worker.REQUESTS.collect(), *worker.REQUEST_DURATION.collect()]
        documents[model] = [
            d for d in EmfDocuments(namespace).documents(families, 0) if d[MODEL_LABEL] == model
        ]
        return documents[model]

    yield write
    for model in documents:
        for code in codes:
            worker.REQUESTS.remove(model, code)
        worker.REQUEST_DURATION.remove(model)


def declaring(
    documents: list[dict[str, Any]], namespace: str, name: str, dimensions: dict[str, str]
) -> list[dict[str, Any]]:
    """The documents from which CloudWatch makes the metric ``namespace``/``name`` with exactly
    ``dimensions``: a directive names it, with a dimension set of exactly those keys, and the
    document's values match."""
    found = []
    for document in documents:
        for directive in document["_aws"]["CloudWatchMetrics"]:
            if directive["Namespace"] != namespace:
                continue
            if name not in {m["Name"] for m in directive["Metrics"]}:
                continue
            sets = [set(dimension_set) for dimension_set in directive["Dimensions"]]
            if set(dimensions) in sets and all(document[k] == v for k, v in dimensions.items()):
                found.append(document)
    return found


def dimensions_of(metric: dict[str, Any]) -> dict[str, str]:
    return {d["Name"]: d["Value"] for d in metric["Dimensions"]}


# --- the alarms --------------------------------------------------------------------------


def test_each_model_gets_a_5xx_rate_and_a_p99_alarm_beside_the_endpoint_alarms(
    multi: Synth,
) -> None:
    alarms = multi.alarms()
    expected = {
        model_alarm_name("scorer", model, what)
        for model in MODELS
        for what in ("5xx-rate", "p99-latency")
    }
    assert expected <= set(alarms)
    assert set(alarms) - expected == {
        "scorer-invocation-5xx",
        "scorer-model-latency",
        "scorer-model-loading-wait",
        "scorer-model-cache-hit",
    }
    for name in expected:
        alarm = alarms[name]
        assert alarm["TreatMissingData"] == "notBreaching"
        assert alarm["ComparisonOperator"] == "GreaterThanThreshold"
        assert alarm["EvaluationPeriods"] == 3
        assert alarm["AlarmActions"] == [TOPIC] and alarm["OKActions"] == [TOPIC]
    # the endpoint's rollback alarms stay the only ones a deployment watches
    endpoint = multi.one("AWS::SageMaker::Endpoint")
    rollback = endpoint["DeploymentConfig"]["AutoRollbackConfiguration"]["Alarms"]
    assert [a["AlarmName"] for a in rollback] == ["scorer-invocation-5xx", "scorer-model-latency"]


Writer = Callable[[str, dict[str, str]], Documents]


def test_the_p99_alarm_watches_the_distribution_the_container_writes(
    multi: Synth, written: Writer
) -> None:
    environment = multi.container_environment()
    namespace = load_config(environment).metrics_namespace
    assert namespace == NAMESPACE  # metrics_namespace reaches the container
    for model in MODELS:
        alarm = multi.alarms()[model_alarm_name("scorer", model, "p99-latency")]
        documents = written(model, environment)

        assert alarm["Namespace"] == namespace
        assert alarm["MetricName"] == emf_name(worker.REQUEST_DURATION) == "RequestDuration"
        assert dimensions_of(alarm) == {MODEL_LABEL: model}
        assert alarm["ExtendedStatistic"] == "p99" and "Statistic" not in alarm
        assert alarm["Threshold"] == 2500
        assert alarm["Period"] == 120  # a 90 s EMF interval, rounded up to whole minutes
        (document,) = declaring(documents, namespace, alarm["MetricName"], dimensions_of(alarm))
        value = document[alarm["MetricName"]]
        assert value["Values"] == [250] and value["Counts"] == [1]  # 0.2 s: bucket le=0.25


def test_the_5xx_rate_alarm_divides_error_codes_by_all_requests_of_the_model(
    multi: Synth, written: Writer
) -> None:
    environment = multi.container_environment()
    namespace = load_config(environment).metrics_namespace
    requests = emf_name(worker.REQUESTS)
    for model in MODELS:
        alarm = multi.alarms()[model_alarm_name("scorer", model, "5xx-rate")]
        documents = written(model, environment)
        queries = {q["Id"]: q for q in alarm["Metrics"]}
        (expression,) = [q for q in alarm["Metrics"] if "Expression" in q]
        stats = {key: q["MetricStat"] for key, q in queries.items() if "MetricStat" in q}

        assert "MetricName" not in alarm and alarm["Threshold"] == 2
        assert expression["ReturnData"] is True
        assert all(q["ReturnData"] is False for key, q in queries.items() if key in stats)
        codes = {code: f"c{code}" for code in emf_metrics.ERROR_CODES}
        assert expression["Expression"] == f"100 * SUM([{', '.join(codes.values())}]) / total"
        assert set(stats) == {"total", *codes.values()}
        for stat in stats.values():
            assert stat["Metric"]["Namespace"] == namespace
            assert stat["Metric"]["MetricName"] == requests == "Requests"
            assert stat["Stat"] == "Sum" and stat["Period"] == 120
        total = dimensions_of(stats["total"]["Metric"])
        assert total == {MODEL_LABEL: model}
        # every request of the model: the roll-up each document declares beside [model, code]
        rolled_up = declaring(documents, namespace, requests, total)
        assert sum(d[requests] for d in rolled_up) == 3
        for code, key in codes.items():
            dimensions = dimensions_of(stats[key]["Metric"])
            assert dimensions == {MODEL_LABEL: model, "code": code}
            found = declaring(documents, namespace, requests, dimensions)
            assert [d[requests] for d in found] == ([1] if code in {"500", "503"} else [])


def test_the_error_codes_are_every_5xx_scorer_answers() -> None:
    def subclasses(cls: type[ScorerError]) -> set[type[ScorerError]]:
        found = set(cls.__subclasses__())
        return found.union(*(subclasses(c) for c in found))

    statuses = {int(c.status_code) for c in {ScorerError, *subclasses(ScorerError)}}
    server_errors = {str(s) for s in statuses if s >= 500}
    assert server_errors == {"500", "502", "503", "504", "507"}
    assert server_errors <= set(emf_metrics.ERROR_CODES)
    assert len(emf_metrics.ERROR_CODES) + 1 <= 10  # CloudWatch: 10 metrics per alarm


def test_self_managed_alarms_use_the_container_name_of_each_target_model(
    single: Synth,
) -> None:
    alarms = single.alarms()
    for key in TARGETS:
        model = model_hash(key)
        assert emf_metrics.target_model_dimension(key) == model
        p99 = alarms[model_alarm_name("scorer", model, "p99-latency")]
        assert dimensions_of(p99) == {MODEL_LABEL: model}
        assert p99["Namespace"] == load_config(single.container_environment()).metrics_namespace
        assert p99["Namespace"] == "scorer" and p99["Period"] == 60  # the defaults
        assert p99["Threshold"] == 1000
    assert len(alarms) == 2 + 1 + 2 * len(TARGETS)  # endpoint, GPU memory, per model


def test_no_models_no_model_alarms(plain: Synth) -> None:
    assert set(plain.alarms()) == {
        "scorer-invocation-5xx",
        "scorer-model-latency",
        "scorer-model-loading-wait",
        "scorer-model-cache-hit",
    }


@pytest.mark.parametrize(
    ("interval", "period"), [(1, 60), (60, 60), (61, 120), (90, 120), (300, 300)]
)
def test_the_alarm_period_holds_at_least_one_emf_interval(interval: int, period: int) -> None:
    assert emf_metrics.alarm_period_seconds(interval) == period


@pytest.mark.parametrize("namespace", ["Creative/Scoring", "a b.c_d#e:f-g", "AWS/SageMaker",
                                       "émf", "x" * 256, "x" * 255, "bad!"])  # fmt: skip
def test_the_stack_takes_the_namespaces_the_container_takes(namespace: str) -> None:
    try:
        load_config({"SCORER_METRICS_NAMESPACE": namespace})
        container_takes = True
    except ConfigError:
        container_takes = False
    try:
        settings_from_context({"metrics_namespace": namespace}.get)
        stack_takes = True
    except ValueError:
        stack_takes = False
    assert stack_takes == container_takes


@pytest.mark.parametrize(
    ("context", "message"),
    [
        ({"alarm_target_models": "a.tar.gz"}, "applies only with -c mode=gpu-self-managed"),
        (
            {"alarm_models": "m1", "environment": '{"SCORER_EMF": "false"}'},
            "turn EMF on",
        ),
        ({"alarm_models": "../m1"}, "not a model name the container serves"),
        ({"alarm_models": "m" * 129}, "not a model name the container serves"),
        ({"alarm_models": '["m1", 2]'}, "must be a list of strings"),
        ({"alarm_models": ",".join(f"m{i}" for i in range(51))}, "at most 50"),
        (
            {"mode": "gpu-self-managed", "alarm_target_models": "/abs.tar.gz"},
            "relative to the model prefix",
        ),
        (
            {"mode": "gpu-self-managed", "alarm_target_models": "a/../b.tar.gz"},
            "relative to the model prefix",
        ),
        ({"alarm_model_5xx_percent": "150"}, "percentage"),
        ({"alarm_model_p99_ms": "0"}, "alarm_model_p99_ms must be positive"),
        ({"environment": '{"SCORER_METRICS_NAMESPACE": "x"}'}, "'metrics_namespace'"),
        ({"environment": '{"SCORER_EMF_INTERVAL_SECONDS": "0"}'}, "SCORER_EMF_INTERVAL_SECONDS"),
        ({"environment": '{"SCORER_EMF": "sometimes"}'}, "SCORER_EMF must be true or false"),
        ({"metrics_endpoint_path": "metrics"}, "must start with '/'"),
        ({"metrics_endpoint_path": "/a/../metrics"}, "'..' component"),
        ({"metrics_publish_frequency_seconds": "45"}, "must be one of 10, 30, 60"),
        (
            {"container_metrics_config": "true", "detailed_observability": "false"},
            "cannot be combined with detailed_observability=false",
        ),
    ],
)
def test_invalid_observability_context_is_refused(context: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        settings_from_context(context.get)


def test_model_lists_come_as_a_json_array_or_comma_separated() -> None:
    for value in ('["m1", "m2"]', "m1, m2", ["m1", "m2"], "m1,m2,m1"):
        settings = settings_from_context({"alarm_models": value}.get)
        assert settings.alarm_model_dimensions == ("m1", "m2")


# --- ContainerMetricsConfig and MetricsConfig --------------------------------------------


def test_container_metrics_config_is_written_on_the_container_when_asked(
    scraped: Synth, plain: Synth
) -> None:
    container = scraped.one("AWS::SageMaker::Model")["PrimaryContainer"]
    assert container["ContainerMetricsConfig"] == {
        "MetricsEndpoints": [
            {"MetricsEndpointPath": "/metrics", "MetricPublishFrequencyInSeconds": 60}
        ]
    }
    assert scraped.one("AWS::SageMaker::EndpointConfig")["MetricsConfig"] == {
        "EnableDetailedObservability": True,
        "MetricPublishFrequencyInSeconds": 60,
    }
    Annotations.from_stack(scraped.stack).has_warning(
        "*", Match.string_like_regexp("writes PrimaryContainer.ContainerMetricsConfig")
    )
    # a changed model and config get new names, so the endpoint rolls out blue/green
    for type_name, key in (
        ("AWS::SageMaker::Model", "ModelName"),
        ("AWS::SageMaker::EndpointConfig", "EndpointConfigName"),
    ):
        assert scraped.one(type_name)[key] != plain.one(type_name)[key]


def test_by_default_neither_is_written(plain: Synth, multi: Synth) -> None:
    assert "ContainerMetricsConfig" not in plain.one("AWS::SageMaker::Model")["PrimaryContainer"]
    assert "MetricsConfig" not in plain.one("AWS::SageMaker::EndpointConfig")
    # a publish frequency alone sets only that, in the CloudFormation schema's MetricsConfig
    assert multi.one("AWS::SageMaker::EndpointConfig")["MetricsConfig"] == {
        "MetricPublishFrequencyInSeconds": 30
    }
    assert "ContainerMetricsConfig" not in multi.one("AWS::SageMaker::Model")["PrimaryContainer"]


# --- CloudFormation validity -------------------------------------------------------------


def lint(synth: Synth) -> list[Any]:
    cfnlint_api = pytest.importorskip("cfnlint.api")
    matches = cfnlint_api.lint(json.dumps(synth.template), regions=["eu-west-1"])
    # W3005 (a redundant DependsOn) is in CDK's own constructs and harmless
    return [m for m in matches if m.rule.id[0] in "EW" and m.rule.id != "W3005"]


def test_templates_with_model_alarms_pass_cfn_lint(
    multi: Synth, single: Synth, plain: Synth
) -> None:
    for synth in (multi, single, plain):
        assert [str(m) for m in lint(synth)] == []


def test_container_metrics_config_is_what_cfn_lint_rejects(scraped: Synth) -> None:
    """Why ContainerMetricsConfig is opt-in: cfn-lint's schema does not know the property
    yet. When this fails, cfn-lint has learnt it: make it the default (docs/infra.md)."""
    found = lint(scraped)
    assert found, "cfn-lint now accepts ContainerMetricsConfig"
    assert all("ContainerMetricsConfig" in str(m) for m in found), [str(m) for m in found]
