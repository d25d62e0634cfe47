"""The login page, with throttling (config/login_throttle.py)."""

from django.conf import settings
from django.contrib.auth import views as auth_views
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied, ValidationError

from config import login_throttle


def _blocked_form(form_class, message):
    """The login form, answering `message` without ever calling authenticate()."""

    class BlockedForm(form_class):
        def clean(self):
            raise ValidationError(message, code="throttled")

    return BlockedForm


class LoginView(auth_views.LoginView):
    """Django's login (session key rotated, `next` checked against our host), throttled per user and address."""

    redirect_authenticated_user = True

    def post(self, request, *args, **kwargs):
        username = request.POST.get("username", "")[:150]
        address = login_throttle.client_address(request)
        wait = login_throttle.blocked_for(username, address)
        if wait:
            form = _blocked_form(self.get_form_class(), login_throttle.wait_message(wait))(request, data=request.POST)
            response = self.render_to_response(self.get_context_data(form=form))
            response.status_code = 429
            response["Retry-After"] = str(wait)
            return response
        return super().post(request, *args, **kwargs)

    def form_invalid(self, form):
        login_throttle.record_failure(self.request.POST.get("username", "")[:150], login_throttle.client_address(self.request))
        return super().form_invalid(form)

    def form_valid(self, form):
        login_throttle.record_success(form.get_user().get_username())
        return super().form_valid(form)


def admin_login(request, extra_context=None):
    """The admin's own login would skip the throttle: send it to ours."""
    if request.user.is_authenticated:
        raise PermissionDenied("The admin site is for staff accounts.")
    return redirect_to_login(request.GET.get("next", "/admin/"), login_url=settings.LOGIN_URL)
