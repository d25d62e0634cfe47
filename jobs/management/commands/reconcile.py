from django.core.management.base import BaseCommand

from jobs import conf
from jobs.reconciler import reconcile


class Command(BaseCommand):
    help = "Fail runs whose node stopped heart-beating, mark unreachable workers, enqueue jobs that lost their RQ job."

    def add_arguments(self, parser):
        parser.add_argument("--lost-after", type=int, default=conf.NODE_LOST_SECONDS, help="seconds without a heartbeat")

    def handle(self, *args, **options):
        self.stdout.write(str(reconcile(lost_after=options["lost_after"])))
